#!/usr/bin/env python3
"""Start a TaskFlux node: ``python taskflux.py -c config.yaml`` (``--help`` lists every option; the installed
``taskflux`` command is the same)."""

import sys

from taskflux.cli import main

if __name__ == "__main__":
    sys.exit(main())
