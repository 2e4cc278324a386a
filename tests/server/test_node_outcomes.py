"""A stopped node tells a write it never proposed (NodeStopped: safe to retry) from one it proposed and
may still be committed by a next leader (StoppedAfterProposing: outcome unknown)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskflux.domain.commands import AddRecord
from taskflux.server.node import NodeStopped, OutcomeUnknown, StoppedAfterProposing
from tests.server.test_node import SingleNode, wait_until

pytestmark = pytest.mark.timeout(60)


def test_a_failed_loop_tells_proposed_writes_apart_from_writes_never_proposed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = SingleNode(tmp_path / "data")
    node = harness.start()
    try:
        wait_until(lambda: node.applied_index >= 1)  # the term's first entry is written: the disk may fail now
        def broken(entries: object) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(harness.storage, "append", broken)
        with pytest.raises(StoppedAfterProposing) as proposed:  # in the log, maybe on followers already
            node.submit(AddRecord("", 1, b"proposed"))
        assert isinstance(proposed.value, OutcomeUnknown) and isinstance(proposed.value, NodeStopped)
        with pytest.raises(NodeStopped) as refused:  # the loop is over: never proposed
            node.submit(AddRecord("", 2, b"refused"))
        assert not isinstance(refused.value, OutcomeUnknown)
    finally:
        harness.stop()
