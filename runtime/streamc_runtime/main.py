"""`worker_main`: the command line of a generated worker (`python -m <app>_worker`).

    --broker URL            memory:// (default) or kafka://host:port[,host:port...];
                            also from STREAMC_BROKER
    --commit-interval SECS  how often offsets are committed (default 3.0)
    --log-level LEVEL       DEBUG, INFO (default), WARNING, ERROR
    --loop LOOP             asyncio (default) or uvloop (`pip install streamc-runtime[uvloop]`);
                            also from STREAMC_LOOP
    --state-dir DIR         keep table stores in RocksDB under DIR (one database per table
                            partition, DIR/<app>/<table>/<partition>); also from
                            STREAMC_STATE_DIR; default: in memory, restored from the changelog
    --metrics-port PORT     serve /metrics (Prometheus), /healthz and /readyz on PORT (0: any
                            free port, logged); also from STREAMC_METRICS_PORT; default: off
    --metrics-host HOST     the address to bind (default 127.0.0.1, this machine only; 0.0.0.0
                            in a container, for Kubernetes probes and scrapes: the generated
                            Dockerfile sets it); also from STREAMC_METRICS_HOST
    --log-format FORMAT     text (default) or json, one object per line; also from
                            STREAMC_LOG_FORMAT

SIGINT/SIGTERM stop the worker gracefully. Exit status: 0 after a clean stop, 1 after a failure,
2 for bad arguments (with a message, never a traceback). The Kafka transport is imported only
for kafka:// URLs, to keep startup fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence

from .app import App
from .logs import FORMATS, configure
from .memory import MemoryBroker, MemoryTransport
from .tasks import cancel
from .transport import Transport, TransportError, redact_url
from .worker import Worker

__all__ = ["parse_broker", "worker_main"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$")


def parse_broker(url: str) -> tuple[str, list[str]]:
    """`("memory", [])` or `("kafka", ["host:port", ...])`; ValueError with a clear message."""
    if url in ("memory://", "memory:"):
        return "memory", []
    shown = redact_url(url)  # a URL may hold a password: never echo it
    if url.startswith("kafka://"):
        if "@" in url:
            raise ValueError(
                f"bad broker URL {shown!r}: credentials do not go in the URL; set "
                "STREAMC_KAFKA_SASL_USERNAME and STREAMC_KAFKA_SASL_PASSWORD"
            )
        hosts = [h.strip() for h in url[len("kafka://") :].split(",")]
        if not hosts or any(not _HOSTPORT.match(h) for h in hosts):
            raise ValueError(f"bad broker URL {shown!r}: expected kafka://host:port[,host:port...]")
        return "kafka", hosts
    raise ValueError(f"bad broker URL {shown!r}: expected memory:// or kafka://host:port[,...]")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _level(text: str) -> str:
    if text.upper() not in _LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown level {text!r} (choose from {', '.join(_LEVELS)})"
        )
    return text.upper()


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535: {text!r}")
    return value


def worker_main(app: App, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{app.name}-worker",
        description=f"Run the agents of the streamc app {app.name!r}.",
    )
    parser.add_argument(
        "--broker",
        default=os.environ.get("STREAMC_BROKER", "memory://"),
        help="memory:// or kafka://host:port[,host:port...] (env STREAMC_BROKER; "
        "default memory://)",
    )
    parser.add_argument(
        "--commit-interval",
        type=_positive_float,
        default=3.0,
        metavar="SECONDS",
        help="seconds between offset commits (default 3.0)",
    )
    parser.add_argument(
        "--log-level", type=_level, default="INFO", metavar="LEVEL", help="default INFO"
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default=os.environ.get("STREAMC_LOOP", "asyncio"),
        help="the event loop (env STREAMC_LOOP; default asyncio); uvloop needs "
        "`pip install streamc-runtime[uvloop]`",
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("STREAMC_STATE_DIR") or None,
        metavar="DIR",
        help="keep table stores in RocksDB under DIR (env STREAMC_STATE_DIR; default: in "
        "memory, restored from the changelog at start)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz on PORT (env STREAMC_METRICS_PORT; "
        "0 picks a free port; default: off)",
    )
    parser.add_argument(
        "--metrics-host",
        default=os.environ.get("STREAMC_METRICS_HOST") or "127.0.0.1",
        metavar="HOST",
        help="the address the metrics server binds (env STREAMC_METRICS_HOST; default "
        "127.0.0.1; 0.0.0.0 to be reachable from outside, e.g. by Kubernetes probes)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("STREAMC_LOG_FORMAT") or "text",
        help="text or json, one object per line (env STREAMC_LOG_FORMAT; default text)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the error (or --help)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        kind, _hosts = parse_broker(args.broker)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.loop not in ("asyncio", "uvloop"):  # from STREAMC_LOOP, which argparse skips
        print(
            f"{parser.prog}: error: unknown event loop {args.loop!r} in STREAMC_LOOP "
            "(choose asyncio or uvloop)",
            file=sys.stderr,
        )
        return 2
    # Settings from the environment, which argparse does not check.
    if args.log_format not in FORMATS:
        print(
            f"{parser.prog}: error: unknown log format {args.log_format!r} in "
            "STREAMC_LOG_FORMAT (choose text or json)",
            file=sys.stderr,
        )
        return 2
    if args.metrics_port is None and os.environ.get("STREAMC_METRICS_PORT"):
        try:
            args.metrics_port = _port(os.environ["STREAMC_METRICS_PORT"])
        except argparse.ArgumentTypeError as exc:
            print(f"{parser.prog}: error: STREAMC_METRICS_PORT: {exc}", file=sys.stderr)
            return 2
    loop_factory = None
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print(
                f"{parser.prog}: error: --loop uvloop: uvloop is not installed "
                "(pip install 'streamc-runtime[uvloop]')",
                file=sys.stderr,
            )
            return 2
        loop_factory = uvloop.new_event_loop
    configure(args.log_level, args.log_format, app.name)
    transport: Transport
    if kind == "memory":
        transport = MemoryTransport(MemoryBroker(), app.name)
    else:
        try:
            from .kafka import KafkaTransport
        except ImportError as exc:
            print(f"{parser.prog}: error: Kafka transport unavailable: {exc}", file=sys.stderr)
            return 1
        try:
            transport = KafkaTransport.from_url(args.broker, group_id=app.name)
        except ValueError as exc:  # a STREAMC_KAFKA_* setting that cannot work
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            return 2
    # The metrics setting is passed only when given: `_serve(app, transport, interval,
    # state_dir)` stays the seam tests replace.
    metrics = () if args.metrics_port is None else ((args.metrics_host, args.metrics_port),)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(
                _serve(app, transport, args.commit_interval, args.state_dir, *metrics)
            )
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the handlers were installed
        return 130


async def _serve(
    app: App,
    transport: Transport,
    commit_interval: float,
    state_dir: str | None = None,
    metrics: tuple[str, int] | None = None,
) -> int:
    worker = Worker(app, transport, commit_interval=commit_interval, state_dir=state_dir)
    if metrics is None:
        return await _run(app, worker)
    from .metrics import MetricsServer  # prometheus-client only when asked for

    server = MetricsServer(worker, *metrics)
    try:
        # Before the worker starts: probes get answers (ready or not) while it connects.
        await server.start()
    except OSError as exc:
        logging.getLogger("streamc").error(
            "cannot serve metrics on %s:%d: %s", metrics[0], metrics[1], exc
        )
        return 1
    try:
        return await _run(app, worker)
    finally:
        await server.close()


async def _run(app: App, worker: Worker) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, worker.request_stop)
        except (NotImplementedError, RuntimeError):  # not the main thread / not supported
            pass
    # Start in a task of its own, so a SIGTERM while it still connects (Kafka retries for
    # minutes) ends the start instead of being ignored until it finishes.
    starting = asyncio.ensure_future(worker.start())
    stopped = asyncio.ensure_future(worker.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # stopped (SIGTERM) while starting: end the start too
        await cancel(starting)
    error = None if starting.cancelled() else starting.exception()
    if error is not None:
        # A transport's own errors say what is wrong in one line; anything else is a bug
        # worth its traceback.
        logging.getLogger("streamc").error(
            "worker %s failed to start: %s",
            app.name,
            error,
            exc_info=None if isinstance(error, TransportError) else error,
        )
        await worker.stop()
        await stopped
        return 1
    return await stopped
