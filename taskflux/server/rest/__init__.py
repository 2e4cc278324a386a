"""The REST interface: a Bottle application over the QueueService.

Two sets of routes:

* ``/commands/v1/*`` — the original's three routes with its JSON envelope, kept field for field,
  its defects fixed: policy violations are reported, a dequeue is logged nowhere per request.
* ``/api/v1/*`` — a resource API: queues, records, immediate and leased dequeues, leases, the cluster and its
  membership; status codes that mean what they say (see ``docs/rest.md`` and ``/api/v1/openapi.json``).

Plus ``/health/live``, ``/health/ready`` and ``/metrics``. Every answer is JSON, errors included; bad
input never reaches the node. Writes are answered once committed, like on every interface.

One module per part: ``requests`` (reading), ``views`` (answers), ``app`` (the Bottle app and its plumbing),
``original``, ``resources``, ``members`` and ``health`` (the route groups).
"""

from taskflux.server.rest.app import RestApi

__all__ = ["RestApi"]
