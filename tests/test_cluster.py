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

from tests.nets import tiny_manifest

DASK = str(Path(sys.executable).with_name("dask"))


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


def task_prefixes(scheduler_file: Path) -> list[str]:
    """The keys in the scheduler's task stream, as prefixes (what the dashboard groups them by)."""
    code = (
        "import json, sys\nfrom distributed import Client\n"
        "with Client(scheduler_file=sys.argv[1], timeout='20s') as c:\n"
        "    stream = c.get_task_stream(start=0)\n"
        "    print(json.dumps(sorted({r['key'] if isinstance(r['key'], str) else r['key'][0] for r in stream})))\n"
    )
    import json

    out = subprocess.run([sys.executable, "-c", code, str(scheduler_file)], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def write_job(folder: Path, manifest: Path) -> Path:
    job = folder / "job.yaml"
    job.write_text(
        f"name: attach\nmanifest: {manifest}\ndb: {folder / 'job.db'}\n"
        "analyses:\n  - {name: scaled, scaling: scaled, by: [task, depth_decile]}\n"
    )
    return job


@pytest.mark.timeout(300)
def test_attach_to_an_existing_scheduler_and_leave_it_running(running_cluster, tmp_path):
    scheduler_file, scheduler, worker = running_cluster
    before = scheduler_info(scheduler_file)
    assert task_prefixes(scheduler_file) == []  # asking once starts the scheduler's task-stream record (as the dashboard does)
    manifest = tiny_manifest(tmp_path / "zoo")
    job = write_job(tmp_path, manifest)
    commands = [
        ["run", str(job), "--scheduler", str(scheduler_file)],  # a whole job, on the scheduler file
        ["extract", str(manifest), "--db", str(tmp_path / "by-address.db"), "--scheduler", before["address"]],
    ]
    for command in commands:
        run = subprocess.run([sys.executable, "-m", "filtershift", *command, "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stderr
        assert "dask dashboard: http" in run.stderr
        # nothing was started or stopped: the same scheduler and the same worker are still there
        assert scheduler.poll() is None and worker.poll() is None
        assert scheduler_info(scheduler_file) == before
    assert (tmp_path / "job.db" / "results" / "scaled" / "provenance.json").is_file()
    assert "extracted 2 new model(s), 100 filters" in run.stdout

    # the task stream reads as the pipeline: one task per checkpoint, chunk writes, the reads
    keys = task_prefixes(scheduler_file)
    for prefix in ("extract-", "consolidate-chunk-"):
        assert any(k.startswith(prefix) for k in keys), (prefix, keys)
    for read in ("coefficient-range", "histograms"):  # READ 1 (pca-moments) is skipped: extract stored the moments
        assert any(k.startswith(read) for k in keys), (read, keys)
    assert not any(k.startswith("pca-moments") for k in keys), keys
    assert {k for k in keys if k.startswith("extract-")} >= {"extract-a-1", "extract-b-2"}


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.status, response.read().decode(errors="replace")


@pytest.mark.timeout(300)
def test_dashboard_answers_while_a_job_runs(tmp_path):
    job = write_job(tmp_path, tiny_manifest(tmp_path / "zoo"))
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "filtershift", "run", str(job), "--no-progress", "--workers", "1", "--dashboard-address", f"127.0.0.1:{port}"],
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
            assert proc.poll() is None, "the job ended before the dashboard was asked"
            out, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, "".join(seen) + err


def default_sigint() -> None:
    """In the child before exec: SIGINT acts by default, whatever the test run inherited (a run
    started in the background from a non-interactive shell has SIGINT ignored, and an ignored
    signal stays ignored across exec; Python then installs no KeyboardInterrupt handler)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("to", ["process", "group"])
def test_ctrl_c_stops_a_job_cleanly(tmp_path, to):
    """Ctrl-C while the zoo trains, sent to the client process alone (``kill -INT``) or to its
    whole process group, workers included (a terminal's Ctrl-C): exit 130 with one line and no
    traceback from any process, the stage logged as interrupted, the zoo not marked complete (a
    rerun builds it), the local cluster's worker processes gone."""
    import json
    import os
    import signal

    import psutil

    job = tmp_path / "job.yaml"
    job.write_text(f"name: stop\nzoo: {{dir: {tmp_path / 'zoo'}, size: tiny}}\ndb: {tmp_path / 'stop.db'}\n")
    with subprocess.Popen(
        [sys.executable, "-m", "filtershift", "run", str(job), "--no-progress", "--workers", "1", "--dashboard-address", ":0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=default_sigint,  # the test sends SIGINT: it must not be inherited as ignored
    ) as proc:
        try:
            for line in proc.stderr:
                if line.startswith("[1/2] zoo: running"):
                    break
            deadline = time.monotonic() + 120
            while not any((tmp_path / "zoo").rglob("*.pth")):  # the worker is training: a first checkpoint
                assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was ever written"
                time.sleep(0.05)
            children = psutil.Process(proc.pid).children(recursive=True)
            assert children, "a local cluster runs its workers in child processes"
            if to == "group":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"worker processes left running: {alive}"
    assert proc.returncode == 130, err
    assert err.strip().endswith("interrupted") and "Traceback" not in err, err
    log = [json.loads(line) for line in (tmp_path / "stop.db" / "results" / "pipeline.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["status"]) for r in log] == [("zoo", "interrupted")]
    assert not (tmp_path / "zoo" / ".filtershift-zoo.json").exists()
    assert not (tmp_path / "stop.db" / "models.parquet").exists()


def ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.timeout(600)
def test_ctrl_c_test_passes_in_a_background_run(tmp_path):
    """The Ctrl-C test in a child pytest that inherits SIGINT as ignored, as `nohup pytest ... &`
    from a script does: the test sets the signal's disposition in its own child, so it passes."""
    import os

    test = f"{Path(__file__).resolve()}::test_ctrl_c_stops_a_job_cleanly[process]"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test, "--basetemp", str(tmp_path / "t")],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=540, preexec_fn=ignore_sigint, env=env,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]


@pytest.mark.timeout(300)
def test_a_rerun_with_nothing_to_do_starts_no_cluster(tmp_path):
    import json

    job = write_job(tmp_path, tiny_manifest(tmp_path / "zoo"))
    command = [sys.executable, "-m", "filtershift", "run", str(job), "--no-progress", "--workers", "1", "--dashboard-address", ":0"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0 and "dask dashboard: http" in first.stderr, first.stderr
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr and "no cluster started" in again.stderr
    assert "dask dashboard" not in again.stderr and "distributed." not in again.stderr, again.stderr
    assert "[1/2] extract: up to date" in again.stderr and "[2/2] analyze:scaled: up to date" in again.stderr
    log = [json.loads(line) for line in (tmp_path / "job.db" / "results" / "pipeline.jsonl").read_text().splitlines()]
    assert [(r["status"], r["cluster"]) for r in log[-2:]] == [("skipped", "none")] * 2


def _extract_command(tmp_path: Path, db: str) -> list[str]:
    manifest = tiny_manifest(tmp_path / "zoo")
    return [sys.executable, "-m", "filtershift", "extract", str(manifest), "--db", str(tmp_path / db), "--workers", "1", "--dashboard-address", ":0"]


@pytest.mark.timeout(300)
def test_progress_to_a_redirected_log_is_one_line_per_stage(tmp_path):
    with open(tmp_path / "stderr.log", "w") as err:  # a file: not a terminal
        run = subprocess.run(_extract_command(tmp_path, "log.db"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, text=True, timeout=240)
    log = (tmp_path / "stderr.log").read_text()
    assert run.returncode == 0, log
    assert "\r" not in log and "Completed" not in log and "it/s" not in log and "%|" not in log, log
    for stage in ("extract", "consolidate"):
        lines = [line for line in log.splitlines() if line.startswith(f"{stage}")]
        assert 1 <= len(lines) <= 3 and "tasks done in" in lines[-1], log


@pytest.mark.timeout(300)
def test_progress_bars_on_a_terminal(tmp_path):
    import os
    import pty

    import fcntl
    import struct
    import termios

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    try:
        proc = subprocess.Popen(_extract_command(tmp_path, "tty.db"), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=secondary, stdin=subprocess.DEVNULL)
        os.close(secondary)
        chunks = []
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=240) == 0
    finally:
        os.close(primary)
    shown = b"".join(chunks).decode(errors="replace")
    assert "\r" in shown and "extract: 100%|" in shown and "task" in shown, shown  # a tqdm bar, redrawn in place
    assert "tasks done in" not in shown, shown


def test_no_progress_is_accepted_by_every_computing_command():
    from filtershift.cli import build_parser

    parser = build_parser()
    for argv in (["analyze", "DB"], ["extract", "M.csv", "--db", "DB"], ["run", "JOB.yaml"], ["zoo", "DIR"],
                 ["import-cnnfilterdb", "F.h5", "--db", "DB"], ["export-cnnfilterdb", "DB", "F.h5"]):
        try:
            args = parser.parse_args([*argv, "--no-progress"])
        except SystemExit:
            pytest.fail(f"{argv[0]} refuses --no-progress")
        assert args.no_progress is True
