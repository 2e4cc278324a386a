"""Settings for the whole test process, applied before any test module is imported."""

from __future__ import annotations

import os

# Tests start node processes with subprocess (fork + exec) from a process that also runs gRPC clients and
# servers. With gRPC's fork support on, the forked child restarts gRPC's poller thread, whose epoll fd
# Popen's close_fds has just closed: the child aborts (SIGABRT) before it reaches exec. The test process
# never uses gRPC in a forked child, so it needs no fork support.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # not one info line per fork from gRPC's fork handlers
