"""streamc_runtime: the shared runtime of streamc-generated workers.

Generated code imports only the names below; everything else is internal.
"""

from .app import App
from .hooks import sink
from .main import worker_main
from .records import Record, Time
from .state.windows import Hopping, Session, Tumbling, Window
from .stream import Event, Stream
from .topic import Join, Merge, Topic
from .worker import Worker

__all__ = [
    "App",
    "Event",
    "Hopping",
    "Join",
    "Merge",
    "Record",
    "Session",
    "Stream",
    "Time",
    "Topic",
    "Tumbling",
    "Window",
    "Worker",
    "sink",
    "worker_main",
]
