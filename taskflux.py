#!/usr/bin/env python3
"""Start a TaskFlux node: ``python taskflux.py -c config.yaml`` (``--help`` lists every option)."""

from gevent import monkey

monkey.patch_all()

import grpc.experimental.gevent as grpc_gevent  # noqa: E402  (must follow patch_all, precede any gRPC object)

grpc_gevent.init_gevent()

import sys  # noqa: E402

from taskflux.server.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
