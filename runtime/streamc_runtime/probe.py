"""`python -m streamc_runtime.probe [healthz|readyz]`: ask this machine's worker for its health.

For container health checks (the generated Dockerfile's HEALTHCHECK), where no HTTP client is
installed: GETs http://127.0.0.1:$STREAMC_METRICS_PORT/<endpoint>; exit status 0 if it answers
200, 1 otherwise (not listening, an error status, or no answer within 3 seconds), with the
reason on stderr.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    endpoint = args[0] if args else "healthz"
    if endpoint not in ("healthz", "readyz") or len(args) > 1:
        print("usage: python -m streamc_runtime.probe [healthz|readyz]", file=sys.stderr)
        return 2
    port = os.environ.get("STREAMC_METRICS_PORT", "")
    if not port.isdigit():
        print("STREAMC_METRICS_PORT is not set to a port number", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}/{endpoint}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read().decode(errors='replace').strip()}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
