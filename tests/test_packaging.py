"""TaskFlux as a Python package: the wheel and the sdist build; the wheel installs in a fresh virtual environment
as the client library alone (no dependencies) or, with the "server" extra, as a node that the ``taskflux``
command starts; ``taskflux --version``, ``taskflux-console`` and ``taskflux-admin`` work from the install."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from taskflux import __version__
from taskflux.client import TaskFluxClient
from tests.support.cluster import REPO, HeldPorts, wait_until

pytestmark = pytest.mark.timeout(900)


def run(*command: str | Path, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, check=check,
                          timeout=600, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, REPO)
    wheel = next(out.glob(f"taskflux-{__version__}-*.whl"))
    sdist = next(out.glob(f"taskflux-{__version__}.tar.gz"))
    return {"wheel": wheel, "sdist": sdist}


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin"


def test_the_sdist_holds_the_sources_and_the_wheel_the_proto(built: dict[str, Path]) -> None:
    listing = run("tar", "tzf", built["sdist"]).stdout
    assert f"taskflux-{__version__}/taskflux/server/main.py" in listing
    wheel_listing = run(sys.executable, "-m", "zipfile", "-l", built["wheel"]).stdout
    assert "taskflux/server/grpc_api/taskflux.proto" in wheel_listing
    assert "taskflux/server/grpc_api/taskflux_pb2.py" in wheel_listing


def test_the_light_install_is_the_client_alone(built: dict[str, Path], tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "client")
    run(bin_dir / "pip", "install", "--quiet", built["wheel"])
    assert run(bin_dir / "python", "-c", "import gevent", check=False).returncode != 0  # nothing of the server
    run(bin_dir / "python", "-c", "from taskflux.client import TaskFluxClient, NewRecord")
    assert run(bin_dir / "taskflux", "--version").stdout.strip() == f"taskflux {__version__}"
    refused = run(bin_dir / "taskflux", check=False)
    assert refused.returncode == 2 and "pip install 'taskflux[server]'" in refused.stderr
    assert "schedule QUEUE SECONDS" in run(bin_dir / "taskflux-console", "help").stdout
    assert run(bin_dir / "taskflux-admin", "--help").returncode == 0


def test_the_server_install_starts_a_node_with_the_taskflux_command(built: dict[str, Path], tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "server")
    run(bin_dir / "pip", "install", "--quiet", f"{built['wheel']}[server]")
    held = HeldPorts(4)
    cluster, client, http, grpc_port = held.ports
    held.release()
    log = (tmp_path / "node.log").open("w")
    node = subprocess.Popen([
        bin_dir / "taskflux", f"--cluster-peers=127.0.0.1:{cluster}", "--tcp-adapter-listen-host=127.0.0.1",
        f"--tcp-adapter-listen-port={client}", f"--http-listen-address=127.0.0.1:{http}",
        f"--grpc-listen-address=127.0.0.1:{grpc_port}", f"--data-directory={tmp_path / 'data'}",
    ], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        with TaskFluxClient([f"127.0.0.1:{client}"], timeout=30) as connected:
            wait_until(lambda: node.poll() is not None or connected.count() == 0, 60, "the node to serve")
            assert node.poll() is None, (tmp_path / "node.log").read_text()
            assert connected.enqueue("", 1, b"from the installed package") == 1
        members = run(bin_dir / "taskflux-admin", "--server", f"127.0.0.1:{http}", "members")
        assert "leader: 0" in members.stdout
        assert run(bin_dir / "taskflux-console", "-e", f"127.0.0.1:{client}", "count").stdout.strip() == "1"
    finally:
        node.terminate()
        node.wait(30)
        log.close()
