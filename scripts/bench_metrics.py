#!/usr/bin/env python3
"""Microbenchmark of the metrics' hot calls: µs per call of what the client interfaces and the node loop
call on every request or batch, and the cost of one scrape.

    python scripts/bench_metrics.py [--calls 300000] [--repeat 5] [--series 40]

Runs under gevent's monkey-patching, like a node. Each figure is the best of ``--repeat`` timings of
``--calls`` calls. ``--series`` request series (interface, command, outcome) are observed before the
scrape is timed, about what a busy node exposes.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
import timeit  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taskflux.server.metrics import NodeMetrics  # noqa: E402


def per_call_us(statement: str, namespace: dict[str, object], calls: int, repeat: int) -> float:
    """The best of ``repeat`` timings of ``calls`` runs of ``statement``, in µs per run."""
    return min(timeit.repeat(statement, globals=namespace, number=calls, repeat=repeat)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--series", type=int, default=40)
    args = parser.parse_args()

    metrics = NodeMetrics(process_metrics=False)
    tcp = metrics.interface("tcp")
    namespace: dict[str, object] = {"metrics": metrics, "tcp": tcp}
    hot_calls = {
        "InterfaceMetrics.observe_request": "tcp.observe_request('enqueue', 'ok', 0.0003)",
        "InterfaceMetrics.enqueued": "tcp.enqueued()",
        "NodeMetrics.observe_request": "metrics.observe_request('tcp', 'enqueue', 'ok', 0.0003)",
        "NodeMetrics.observe_persist": "metrics.observe_persist(0.0002, 3)",
    }
    for name, statement in hot_calls.items():
        print(f"{name:36} {per_call_us(statement, namespace, args.calls, args.repeat):6.3f} µs")

    for i in range(args.series):
        metrics.observe_request(("tcp", "rest", "grpc")[i % 3], f"command{i // 6}", ("ok", "error")[i % 2], 0.001)
    scrapes = max(1, args.calls // 1000)
    print(f"{'scrape (render), ' + str(args.series) + ' request series':36} "
          f"{per_call_us('metrics.render()', namespace, scrapes, args.repeat):6.1f} µs")


if __name__ == "__main__":
    main()
