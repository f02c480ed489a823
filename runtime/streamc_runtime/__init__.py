"""streamc_runtime: the shared runtime of streamc-generated workers.

Generated code imports only the names below; everything else is internal.
"""

from .app import App
from .events import Event
from .hooks import result_check, sink
from .main import worker_main
from .records import Record, Time
from .runs import Run
from .state.window_types import Hopping, Session, Tumbling, Window
from .stream import Stream, awaitable
from .topic import Join, Merge, Topic
from .worker import Worker

__all__ = [
    "App",
    "Event",
    "Hopping",
    "Join",
    "Merge",
    "Record",
    "Run",
    "Session",
    "Stream",
    "Time",
    "Topic",
    "Tumbling",
    "Window",
    "Worker",
    "awaitable",
    "result_check",
    "sink",
    "worker_main",
]
