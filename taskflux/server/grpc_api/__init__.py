"""The gRPC interface: ``taskflux.proto`` (compatible with the original TaskFlux's), its generated
modules (``scripts/generate_grpc.py``) and the servicer (``servicer.py``). Import it only after
``grpc.experimental.gevent.init_gevent()``."""
