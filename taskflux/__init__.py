"""TaskFlux: a distributed, fault-tolerant priority-queue server."""

__version__ = "0.2.0"
