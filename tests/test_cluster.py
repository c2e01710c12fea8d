"""The cluster edge with real services: an existing ``dask scheduler`` + ``dask worker`` that
filtershift attaches to and leaves running, and the dashboard while a command runs."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

DASK = str(Path(sys.executable).with_name("dask"))


def tiny_manifest(folder: Path) -> Path:
    """Two tiny PyTorch checkpoints and their manifest (100 3x3 filters in all)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3)).state_dict(), folder / "a.pt")
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 8, 1)).state_dict(), folder / "b.pt")
    (folder / "manifest.csv").write_text("path,task\na.pt,classification\nb.pt,segmentation\n")
    return folder / "manifest.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scheduler_info(scheduler_file: Path) -> dict:
    """Workers of a running scheduler, asked from a separate process (no Client in the test process)."""
    code = (
        "import json, sys\nfrom distributed import Client\n"
        "with Client(scheduler_file=sys.argv[1], timeout='20s') as c:\n"
        "    c.wait_for_workers(1, timeout=60)\n"
        "    info = c.scheduler_info(n_workers=-1)\n"
        "    print(json.dumps({'address': info['address'], 'workers': sorted(info['workers'])}))\n"
    )
    import json

    out = subprocess.run([sys.executable, "-c", code, str(scheduler_file)], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


@pytest.fixture
def running_cluster(tmp_path) -> Iterator[tuple[Path, subprocess.Popen, subprocess.Popen]]:
    """A `dask scheduler` and one `dask worker`, started the way a user would, outside filtershift."""
    scheduler_file = tmp_path / "scheduler.json"
    logs = [open(tmp_path / "scheduler.log", "w"), open(tmp_path / "worker.log", "w")]
    scheduler = subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(scheduler_file)],
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = subprocess.Popen(
            [DASK, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--memory-limit", "2GiB", "--local-directory", str(tmp_path)],
            stdout=logs[1],
            stderr=subprocess.STDOUT,
        )
        yield scheduler_file, scheduler, worker
    finally:
        for proc in (worker, scheduler):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in logs:
            log.close()


@pytest.mark.timeout(300)
def test_attach_to_an_existing_scheduler_and_leave_it_running(running_cluster, tmp_path):
    scheduler_file, scheduler, worker = running_cluster
    before = scheduler_info(scheduler_file)
    manifest = tiny_manifest(tmp_path / "zoo")
    # absolute paths: the workers of an existing cluster run in their own working directory
    for target, db in ((str(scheduler_file), tmp_path / "by-file.db"), (before["address"], tmp_path / "by-address.db")):
        run = subprocess.run(
            [sys.executable, "-m", "filtershift", "extract", str(manifest), "--db", str(db), "--no-progress", "--scheduler", target],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert run.returncode == 0, run.stderr
        assert "extracted 2 new model(s), 100 filters" in run.stdout
        # nothing was started or stopped: the same scheduler and the same worker are still there
        assert scheduler.poll() is None and worker.poll() is None
        assert scheduler_info(scheduler_file) == before


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.status, response.read().decode(errors="replace")


@pytest.mark.timeout(300)
def test_dashboard_answers_while_a_command_runs(tmp_path):
    manifest = tiny_manifest(tmp_path / "zoo")
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "filtershift", "extract", str(manifest), "--db", "t.db", "--no-progress", "--workers", "1", "--dashboard-address", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if line.startswith("dask dashboard: "):
                    break
            link = seen[-1].removeprefix("dask dashboard: ").strip()
            assert link == f"http://127.0.0.1:{port}/status", "".join(seen)
            base = link.removesuffix("/status")
            status, page = fetch(f"{base}/status")
            assert status == 200 and "<html" in page.lower()
            status, page = fetch(f"{base}/info/main/workers.html")
            assert status == 200 and "Worker" in page
            assert proc.poll() is None, "the command ended before the dashboard was asked"
            out, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, "".join(seen) + err
