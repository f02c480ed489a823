"""Run the worker: `python -m bench_p4_worker --help`."""

from streamc_runtime import worker_main

from . import agents  # noqa: F401 - importing the agents registers them on the app
from .app import app


def main() -> None:
    raise SystemExit(worker_main(app))


if __name__ == "__main__":
    main()
