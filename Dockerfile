# TaskFlux node image.
#
#   docker build -t taskflux .
#   docker run -d --name taskflux -p 2602:2602 -p 1606:1606 -p 1607:1607 -v taskflux-data:/var/lib/taskflux taskflux
#
# Without further settings the container is a single-node cluster (the shipped config.yaml) listening on
# every interface, with its data in the volume. Configure it with TASKFLUX_* environment variables
# (docs/configuration.md), or append --options to `docker run ... taskflux`: they are added to the
# command line below, which wins over the environment, which wins over the file.
# A three-node cluster: docker-compose.yaml. Operating it: docs/installation.md, docs/operations.md.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /opt/taskflux

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# A fixed, numeric, non-root identity (so that runAsNonRoot-style checks can verify it), and the data
# directory owned by it before VOLUME: a new named volume starts with this ownership.
RUN groupadd --system --gid 10001 taskflux \
 && useradd --system --uid 10001 --gid taskflux --home-dir /var/lib/taskflux --no-create-home \
        --shell /usr/sbin/nologin taskflux \
 && mkdir -p /var/lib/taskflux \
 && chown taskflux:taskflux /var/lib/taskflux \
 && chmod 0750 /var/lib/taskflux

# The application, owned by root and read-only for the node (readable whatever the umask of the checkout
# was); compiled once here so that start-up does not compile (PYTHONDONTWRITEBYTECODE keeps the running
# node from writing anything outside the volume).
COPY taskflux.py config.yaml ./
COPY taskflux ./taskflux
RUN python -m compileall -q taskflux taskflux.py \
 && chmod -R a+rX,go-w /opt/taskflux

# Defaults for a container: listen on every interface, keep the data in the volume. They are environment
# variables, so they win over config.yaml (and over a config file you mount); set them to change them.
ENV TASKFLUX_CLUSTER_LISTEN_HOST=0.0.0.0 \
    TASKFLUX_TCP_ADAPTER_LISTEN_HOST=0.0.0.0 \
    TASKFLUX_HTTP_LISTEN_ADDRESS=0.0.0.0:1606 \
    TASKFLUX_GRPC_LISTEN_ADDRESS=0.0.0.0:1607 \
    TASKFLUX_DATA_DIRECTORY=/var/lib/taskflux

VOLUME /var/lib/taskflux
# client TCP protocol, HTTP (REST, /metrics, /health/*), gRPC, inter-node (Raft)
EXPOSE 2602 1606 1607 5000

USER 10001:10001

# Ready = the node knows a leader and has applied everything up to its commit index (HTTP 200; 503
# otherwise). A node alone, before a majority of its cluster is up, is not ready: hence the start period.
# The slim image has no curl: Python's urllib does the request, and an HTTP error status raises (exit 1).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as r; sys.exit(0 if r.urlopen('http://127.0.0.1:1606/health/ready', timeout=3).status == 200 else 1)"]

# SIGTERM (docker stop) stops the node gracefully: no new clients, leadership handed to a follower,
# in-flight requests finished, files closed, exit 0. Give it time: `docker stop -t 30`, or
# stop_grace_period in compose. python is PID 1 and handles SIGTERM and SIGINT itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "/opt/taskflux/taskflux.py", "-c", "/opt/taskflux/config.yaml"]
CMD []
