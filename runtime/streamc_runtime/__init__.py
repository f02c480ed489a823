"""streamc_runtime: the shared runtime of streamc-generated workers.

Generated code imports only the names below; everything else is internal.
"""

from .app import App, Join, Topic, Worker
from .hooks import sink
from .records import Record
from .stream import Event, Stream
from .worker import worker_main

__all__ = ["App", "Event", "Join", "Record", "Stream", "Topic", "Worker", "sink", "worker_main"]
