"""TaskFlux: a distributed, fault-tolerant priority-queue server."""
