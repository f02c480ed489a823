"""Tables: keyed state that aggregations fold streams into, exact across crashes.

One store per table partition (`memory.py` by default, `rocksdb.py` with a state directory),
backed by a compacted changelog topic whose records carry the input positions they reflect
(`changelog.py`: restore and the skip rule). `table.py` holds the declaration (`Table`) and a
worker's live tables; `aggregate.py` the stream operation that folds into them.
"""

from .changelog import POSITION_HEADER, POSITIONS_HEADER, POSITIONS_KEY, table_rows
from .table import Table

__all__ = ["POSITIONS_HEADER", "POSITIONS_KEY", "POSITION_HEADER", "Table", "table_rows"]
