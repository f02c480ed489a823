"""The worker's log output: `--log-format text` (the default) or `json`.

`json` writes one object per line, for log collectors that parse lines:

    {"time": "2025-01-31T12:00:00.123Z", "level": "WARNING", "logger": "streamc",
     "message": "dead letter: orders[2]@17 ...", "app": "orders", "agent": "totals",
     "topic": "orders", "partition": 2, "offset": 17}

`app` is on every line; `agent` on lines logged while an agent runs (its hooks' own log calls
too: the agent's task carries it in a context variable); `topic`, `partition` and `offset` on
lines about one message (dead letters). A traceback goes in `exc_info` as one string.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

__all__ = ["AGENT", "FORMATS", "JsonFormatter", "configure"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The agent whose task is running: set once at the start of each agent's task (tasks copy the
# context they are created in, so it never leaks into other tasks).
AGENT: ContextVar[str | None] = ContextVar("streamc_agent", default=None)

_MESSAGE_FIELDS = ("topic", "partition", "offset")


class JsonFormatter(logging.Formatter):
    def __init__(self, app: str) -> None:
        super().__init__()
        self.app = app

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "app": self.app,
        }
        agent = getattr(record, "agent", None) or AGENT.get()
        if agent:
            out["agent"] = agent
        for name in _MESSAGE_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str, fmt: str, app: str) -> None:
    """Log to stderr at `level` in `fmt` ("text" or "json"), as `logging.basicConfig` does:
    nothing changes if logging is configured already (an embedding program, a test run)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(app))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
