"""The ``taskflux`` command: start a node exactly like ``python taskflux.py`` (``--version`` prints the version).

gevent's monkey-patching must come before anything else imports the socket module, and gRPC's gevent
integration before any gRPC object exists: this module imports nothing of the server before doing both.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from taskflux import __version__

SERVER_EXTRA_HINT = "taskflux: the server needs its dependencies: pip install 'taskflux[server]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run a node (the options of ``python taskflux.py --help``); the process exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-V"]):
        print(f"taskflux {__version__}")
        return 0
    try:
        from gevent import monkey
    except ImportError:
        print(SERVER_EXTRA_HINT, file=sys.stderr)
        return 2
    monkey.patch_all()
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()
    from taskflux.server.main import main as serve

    return serve(args)
