"""The monitoring kit against the real thing: ``promtool`` checks a node's /metrics and the rules; a real
Prometheus scrapes a real 3-node cluster and evaluates the rules and the dashboard's queries; killing the leader,
dead-lettering a record and losing the majority make the matching series and alerts react.

Prometheus is a Debian package (``apt-get install prometheus``); ``.ci/run`` installs it and sets
TASKFLUX_REQUIRE_PROMETHEUS=1, which turns a missing binary into a failure instead of a skip."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskflux.client.client import TaskFluxClient
from tests.metrics.test_dashboard import DASHBOARD
from tests.support.cluster import REPO, HeldPorts, LocalCluster, wait_until

pytestmark = pytest.mark.timeout(300)

RULES = REPO / "scripts" / "prometheus-rules.yaml"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("TASKFLUX_REQUIRE_PROMETHEUS"):
            raise AssertionError(f"{name} is not installed (apt-get install prometheus)")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read()  # type: ignore[no-any-return]


def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path: Path) -> None:
    checked = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the dashboard's queries, as recording rules, go through the same checker
    queries = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{number}", "expr": query}
        for number, query in enumerate(dashboard_panel_queries())]}]}
    (tmp_path / "dashboard-rules.yaml").write_text(yaml.safe_dump(queries))
    checked = subprocess.run([tool("promtool"), "check", "rules", str(tmp_path / "dashboard-rules.yaml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


class Prometheus:
    """A Prometheus process scraping the cluster's nodes every second, with the rules evaluated every second."""

    def __init__(self, cluster: LocalCluster, root: Path) -> None:
        held = HeldPorts(1)
        self.address = f"127.0.0.1:{held.ports[0]}"
        held.release()
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "2s"  # the same rules, on a test's time scale
        (root / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(root / "rules.yaml")],
            "scrape_configs": [{"job_name": "taskflux", "static_configs": [
                {"targets": [node.http_address for node in cluster.nodes]}]}],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (root / "prometheus.log").open("w")
        self.process = subprocess.Popen([
            tool("prometheus"), f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address={self.address}", "--log.level=warn",
        ], stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._ready, 60, "Prometheus to be ready")

    def _ready(self) -> bool:
        assert self.process.poll() is None, "prometheus exited"
        try:
            return b"Ready" in fetch(f"http://{self.address}/-/ready")
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        answer = json.loads(fetch(f"http://{self.address}/api/v1/{path}?{urllib.parse.urlencode(params)}"))
        assert answer["status"] == "success", answer
        return answer["data"]

    def value(self, query: str) -> float | None:
        """The single value of an instant query, None when it has no sample."""
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> set[str]:
        return {alert["labels"]["alertname"] for alert in self.api("alerts")["alerts"] if alert["state"] == "firing"}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture
def monitored(tmp_path: Path) -> Iterator[tuple[LocalCluster, Prometheus]]:
    cluster = LocalCluster(3, tmp_path)
    with cluster.running():
        prometheus = Prometheus(cluster, tmp_path)
        try:
            yield cluster, prometheus
        finally:
            prometheus.stop()


def test_every_node_s_metrics_pass_promtool(monitored: tuple[LocalCluster, Prometheus]) -> None:
    cluster, _ = monitored
    for node in cluster.nodes:
        text = fetch(f"http://{node.http_address}/metrics")
        checked = subprocess.run([tool("promtool"), "check", "metrics"], input=text, capture_output=True)
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_prometheus_follows_the_cluster_and_the_alerts_react(monitored: tuple[LocalCluster, Prometheus]) -> None:
    cluster, prometheus = monitored
    wait_until(lambda: prometheus.value('count(up{job="taskflux"} == 1)') == 3, 60, "three targets up")
    client = TaskFluxClient(cluster.client_addresses, timeout=20)
    client.create_queue("dead")
    client.create_queue("jobs", max_deliveries=1, dead_letter_queue="dead")
    client.enqueue_many("jobs", [(priority, b"job") for priority in range(5)])
    client.enqueue("jobs", 1, b"later", delay=600)

    # the per-queue depth, as the leader sees it, through a recording rule
    wait_until(lambda: prometheus.value('taskflux:queue_depth:leader{queue="jobs"}') == 5, 60, "the depth of jobs")
    assert prometheus.value('taskflux:queue_delayed:leader{queue="jobs"}') == 1
    # the request rate (a counter's first sample has no rate: keep asking while waiting)
    wait_until(lambda: client.count("jobs") == 5 and (
        prometheus.value('sum(taskflux:requests:rate1m{interface="tcp", command="count"})') or 0) > 0, 60,
               "a request rate")
    # every query of the dashboard evaluates
    for query in dashboard_panel_queries():
        prometheus.api("query", query=query)

    # a poison record: dead-lettered at its first failure
    record = client.dequeue("jobs")
    assert record is not None
    record.nack()
    wait_until(lambda: "TaskFluxDeadLettersGrowing" in prometheus.firing(), 60, "the dead-letter alert")

    # the leader dies: a new one, the leader-changes series and its alert
    leader = cluster.wait_for_leader()
    before = prometheus.value("sum(taskflux_raft_leader_changes_total)") or 0
    cluster.nodes[leader].kill()
    survivors = [i for i in range(3) if i != leader]
    cluster.wait_for_leader(among=survivors, timeout=30)
    wait_until(lambda: (prometheus.value("sum(taskflux_raft_leader_changes_total)") or 0) > before, 60,
               "the leader changes counted")
    wait_until(lambda: "TaskFluxLeaderChanged" in prometheus.firing(), 60, "the leader-changed alert")
    wait_until(lambda: prometheus.value('up{job="taskflux"} == 0') == 0, 60, "the dead node's target down")
    client.close()

    # the majority lost: nobody leads
    cluster.nodes[survivors[0]].kill()
    wait_until(lambda: "TaskFluxNoLeader" in prometheus.firing(), 90, "the no-leader alert")


def dashboard_panel_queries() -> list[str]:
    """The dashboard's panel queries with Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    fill = {"$instance": ".*", "$__rate_interval": "1m", "$__range": "5m"}
    return [re.sub(r"\$\w+", lambda match: fill[match.group(0)], query) for query in queries]
