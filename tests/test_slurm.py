"""``--cluster slurm``, ``cluster-script`` and ``cluster/filtershift.sbatch``.

Unmarked tests check the resolved settings and the job-script string (no batch system needed, as
dask-jobqueue's own tests do). Tests marked ``slurm`` submit real jobs to the single-node Slurm
started by ``.ci/slurm-setup.sh``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import dask
import pytest

from filtershift.cli import main
from filtershift.runtime.slurm import (
    PLACEHOLDER_SCHEDULER,
    SlurmConfigError,
    SlurmSettings,
    job_script,
    packaged_defaults,
    resolve_slurm_settings,
)
from tests.nets import tiny_manifest

REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, **settings) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"filtershift": {"slurm": settings}}))
    return path


# --- configuration, resolved once ----------------------------------------------------------------


def test_packaged_defaults_are_the_settings_defaults(tmp_path):
    """The packaged YAML and the dataclass agree, so either documents the defaults."""
    settings = resolve_slurm_settings(cwd=tmp_path)
    assert settings.sources == ("filtershift/config/slurm.yaml",)
    packaged = packaged_defaults()["filtershift"]["slurm"]
    assert settings.minimum_jobs == packaged["adaptive"]["minimum-jobs"] == SlurmSettings.minimum_jobs
    assert settings.maximum_jobs == packaged["adaptive"]["maximum-jobs"] == SlurmSettings.maximum_jobs
    assert settings == SlurmSettings(sources=settings.sources)


def test_site_file_then_cluster_config_override(tmp_path):
    write_config(tmp_path / "cluster" / "slurm.yaml", queue="site", cores=4, memory="8GiB")
    own = write_config(tmp_path / "mine.yaml", queue="mine", job_extra_directives=["--qos=short"], adaptive={"maximum-jobs": 9})
    site_only = resolve_slurm_settings(cwd=tmp_path)
    assert (site_only.queue, site_only.cores, site_only.memory) == ("site", 4, "8GiB")
    both = resolve_slurm_settings(own, cwd=tmp_path)
    assert (both.queue, both.cores, both.memory) == ("mine", 4, "8GiB")
    assert both.job_extra_directives == ("--qos=short",)  # job_extra_directives == job-extra-directives
    assert (both.minimum_jobs, both.maximum_jobs) == (1, 9)
    assert both.sources[1:] == (str(tmp_path / "cluster" / "slurm.yaml"), str(own))


def test_dask_config_overrides_packaged_defaults(tmp_path):
    with dask.config.set({"filtershift.slurm.queue": "from-dask-config"}):
        assert resolve_slurm_settings(cwd=tmp_path).queue == "from-dask-config"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"queu": "x"}, "unknown key 'queu'"),
        ({"cores": "two"}, "cores must be an integer"),
        ({"job-extra-directives": "--qos=short"}, "job-extra-directives must be a list of strings"),
        ({"walltime": 3600}, 'quote it: walltime: "01:00:00"'),
        ({"memory": "lots"}, "memory 'lots' is not a size"),
        ({"cores": 3, "processes": 2}, "cores (3) must be a positive multiple of processes (2)"),
        ({"adaptive": {"minimum-jobs": 5, "maximum-jobs": 2}}, "adaptive.minimum-jobs (5) <= adaptive.maximum-jobs (2)"),
        ({"adaptive": {"max": 2}}, "unknown key 'adaptive.max'"),
    ],
)
def test_bad_settings_name_the_key_and_the_file(tmp_path, settings, message):
    path = write_config(tmp_path / "bad.yaml", **settings)
    with pytest.raises(SlurmConfigError) as err:
        resolve_slurm_settings(path, cwd=tmp_path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_unquoted_walltime_in_yaml_is_caught(tmp_path):
    path = tmp_path / "wall.yaml"
    path.write_text("filtershift:\n  slurm:\n    walltime: 1:00:00\n")  # YAML 1.1 sexagesimal: the number 3600
    with pytest.raises(SlurmConfigError, match="quote it"):
        resolve_slurm_settings(path, cwd=tmp_path)


def test_config_file_layout_errors(tmp_path):
    with pytest.raises(SlurmConfigError, match="does not exist"):
        resolve_slurm_settings(tmp_path / "missing.yaml", cwd=tmp_path)
    flat = tmp_path / "flat.yaml"
    flat.write_text("queue: x\n")
    with pytest.raises(SlurmConfigError, match="under 'filtershift: slurm:'"):
        resolve_slurm_settings(flat, cwd=tmp_path)


# --- the job script, as a string -----------------------------------------------------------------


def test_job_script_renders_every_setting(tmp_path):
    path = write_config(
        tmp_path / "site.yaml",
        queue="normal",
        account="proj-1234",
        walltime="00:20:00",
        job_name="fs-test",
        job_extra_directives=["--qos=short", "--constraint=haswell"],
        job_script_prologue=["source /opt/venv/bin/activate"],
        cores=4,
        processes=2,
        memory="6GiB",
        python="/opt/venv/bin/python",
        local_directory="/scratch",
        worker_extra_args=["--lifetime", "55m"],
    )
    script = job_script(resolve_slurm_settings(path, cwd=tmp_path), scheduler="tcp://10.0.0.1:8786", worker_number=3)
    assert script == textwrap.dedent(
        """\
        #!/usr/bin/env bash

        #SBATCH -J fs-test
        #SBATCH -p normal
        #SBATCH -A proj-1234
        #SBATCH -n 1
        #SBATCH --cpus-per-task=4
        #SBATCH --mem=6G
        #SBATCH -t 00:20:00
        #SBATCH --qos=short
        #SBATCH --constraint=haswell
        source /opt/venv/bin/activate
        /opt/venv/bin/python -m distributed.cli.dask_worker tcp://10.0.0.1:8786 --name fs-test-3 --nthreads 2 --memory-limit 3.00GiB --nworkers 2 --nanny --death-timeout 60 --local-directory /scratch --lifetime 55m
        """
    )


def test_job_directives_skip_drops_generated_lines(tmp_path):
    path = write_config(tmp_path / "s.yaml", job_directives_skip=["--mem"])
    script = job_script(resolve_slurm_settings(path, cwd=tmp_path))
    assert "--mem" not in script.split("/python")[0]  # the #SBATCH header, not the worker's --memory-limit
    assert "#SBATCH --cpus-per-task=1" in script


def test_jobqueue_config_cannot_change_the_script(tmp_path):
    """Settings are resolved once; dask-jobqueue's own `jobqueue.slurm` config is not consulted."""
    settings = resolve_slurm_settings(cwd=tmp_path)
    plain = job_script(settings)
    with dask.config.set({"jobqueue.slurm.queue": "elsewhere", "jobqueue.slurm.job-extra-directives": ["--x"], "jobqueue.slurm.job-mem": "99G"}):
        assert job_script(settings) == plain
    assert f"{sys.executable} -m distributed.cli.dask_worker {PLACEHOLDER_SCHEDULER}" in plain


def test_cluster_script_command_prints_the_job_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "cluster" / "slurm.yaml", queue="site-queue")
    own = write_config(tmp_path / "own.yaml", account="acct")
    assert main(["cluster-script", "--cluster", "slurm", "--cluster-config", str(own)]) == 0
    out, err = capsys.readouterr()
    assert out == job_script(resolve_slurm_settings(own, cwd=tmp_path))
    assert "#SBATCH -p site-queue\n#SBATCH -A acct\n" in out
    assert "settings from" in err


def test_cluster_script_command_reports_bad_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = write_config(tmp_path / "bad.yaml", cpus=2)
    assert main(["cluster-script", "--cluster", "slurm", "--cluster-config", str(bad)]) == 2
    assert "unknown key 'cpus'" in capsys.readouterr().err
    assert main(["cluster-script"]) == 2  # --cluster local has no job script


# --- a real Slurm ----------------------------------------------------------------------------------


def slurm_running() -> str | None:
    """Why the Slurm tests cannot run, or None."""
    if shutil.which("sinfo") is None:
        return "Slurm is not installed (no sinfo): run .ci/slurm-setup.sh as root first"
    states = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=30)
    if states.returncode != 0 or "idle" not in states.stdout and "mixed" not in states.stdout and "allocated" not in states.stdout:
        return f"Slurm is not running (sinfo: {states.stdout.strip() or states.stderr.strip()}): run .ci/slurm-setup.sh as root first"
    return None


def needs_slurm(test):
    reason = slurm_running() if shutil.which("sinfo") else "Slurm is not installed (no sinfo): run .ci/slurm-setup.sh as root first"
    return pytest.mark.slurm(pytest.mark.skipif(reason is not None, reason=reason or "")(test))


def queued(job_name: str) -> list[tuple[str, str]]:
    """(job id, state) of the jobs with this name that are pending or running."""
    out = subprocess.run(
        ["squeue", "--noheader", "--name", job_name, "--states=PENDING,CONFIGURING,RUNNING,COMPLETING", "--format=%i %T"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(line.split()) for line in out.splitlines()]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def no_jobs_left(job_name: str) -> bool:
    return not [job for job, state in queued(job_name) if state != "COMPLETING"]


@pytest.fixture
def slurm_config(tmp_path) -> tuple[str, Path]:
    """A unique job name (so that other jobs on the machine don't count) and its settings file."""
    name = f"fs-{uuid.uuid4().hex[:8]}"
    path = write_config(tmp_path / "slurm.yaml", job_name=name, memory="1GiB", walltime="00:10:00", log_directory=str(tmp_path / "slurm-logs"))
    return name, path


@needs_slurm
@pytest.mark.timeout(300)
def test_dask_work_runs_on_slurm_jobs(slurm_config):
    import dask.array as da

    from filtershift.runtime.cluster import ClusterSettings, connect

    name, config = slurm_config
    with connect(ClusterSettings(kind="slurm", workers=2, dashboard_address=":0", cluster_config=str(config)), out=sys.stdout) as client:
        total = da.arange(1_000_000, chunks=100_000).sum().compute()
        assert total == 999_999 * 1_000_000 // 2
        jobs = queued(name)
        assert len(jobs) == 2 and all(state == "RUNNING" for _, state in jobs), jobs
        client.wait_for_workers(2, timeout=120)  # a job can be RUNNING before its worker registers
        workers = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
        assert workers == {f"{name}-0", f"{name}-1"}  # named as cluster-script renders them
    wait_until(lambda: no_jobs_left(name), 30, "the worker jobs to be cancelled")


CLUSTER_THEN_WAIT = """
import sys, time
from filtershift.runtime.cluster import ClusterSettings, connect
if __name__ == "__main__":
    try:  # as filtershift.cli.main does
        with connect(ClusterSettings(kind="slurm", workers=1, dashboard_address=":0", cluster_config=sys.argv[1])) as client:
            client.wait_for_workers(1, timeout=120)
            print("ready", flush=True)
            time.sleep(600)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
"""


@needs_slurm
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_cancels_the_slurm_jobs(slurm_config, tmp_path, sig):
    name, config = slurm_config
    script = tmp_path / "hold.py"
    script.write_text(CLUSTER_THEN_WAIT)
    with subprocess.Popen([sys.executable, str(script), str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            assert [state for _, state in queued(name)] == ["RUNNING"]
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, err
    wait_until(lambda: no_jobs_left(name), 30, "the worker job to be cancelled")


def run_filtershift(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """The CLI in its own process (a LocalCluster changes the parent's thread environment)."""
    return subprocess.run([sys.executable, "-m", "filtershift", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def database_tables(db: Path):
    import numpy as np
    import pandas as pd
    import zarr

    group = zarr.open_group(db / "filters.zarr", mode="r")
    layers = pd.read_parquet(db / "layers.parquet").sort_values("layer_id").reset_index(drop=True)
    models = pd.read_parquet(db / "models.parquet").sort_values("model_id").reset_index(drop=True)
    return np.asarray(group["filters"][:]), np.asarray(group["layer"][:]), layers, models[["model_id", "name", "sha256", "status", "n_filters"]]


def job_state(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id, "--oneliner"], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


@needs_slurm
@pytest.mark.timeout(400)
def test_sbatch_script_runs_a_job_in_one_allocation(tmp_path):
    """cluster/filtershift.sbatch runs `filtershift run JOB.yaml` (extract + analyze) with its own
    scheduler and workers as srun steps, and the job ends COMPLETED."""
    manifest = tiny_manifest(tmp_path / "zoo")
    (tmp_path / "job.yaml").write_text(
        f"name: batch\nmanifest: {manifest}\ndb: batch.db\nanalyses:\n  - {{name: scaled, by: [task, depth_decile]}}\n"
    )
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--chdir={tmp_path}",
            "--output=run-%j.out",
            "--time=00:10:00",
            f"--export=ALL,FILTERSHIFT_PYTHON={sys.executable},FILTERSHIFT_DASHBOARD=:0",
            str(REPO / "cluster" / "filtershift.sbatch"),
            "run",
            "job.yaml",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    final = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    state = wait_until(lambda: (s := job_state(job_id)).get("JobState") in final and s, 300, f"job {job_id} to end", interval=0.5)
    log = (tmp_path / f"run-{job_id}.out").read_text()
    assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert "2 worker(s) x 1 thread(s)" in log and "dask dashboard: http" in log
    assert "[1/2] extract: done" in log and "[2/2] analyze:scaled: done" in log
    assert "filtershift run exited with 0" in log
    assert not no_error_lines(log), log  # the steps end by themselves: no "error: *** STEP ... CANCELLED"
    assert not list(tmp_path.glob("filtershift-scheduler-*.json"))  # cleaned up
    filters, *_ = database_tables(tmp_path / "batch.db")
    assert filters.shape == (100, 9)
    assert (tmp_path / "batch.db" / "results" / "scaled" / "provenance.json").is_file()


def no_error_lines(text: str) -> list[str]:
    """The lines of a log that read like a failure (Slurm's "error: *** JOB ... CANCELLED")."""
    return [line for line in text.splitlines() if "CANCELLED" in line or "error:" in line]


def small_database(path: Path) -> Path:
    from filtershift.bench.synthetic import gaussian, generate_filters, model_tables, per_layer, write_synthetic

    models, layers = model_tables([{"name": "a", "task": "cls", "data_type": "natural", "dataset": "d", "family": "f"}], [[40, 40]], layer_name="c{}")
    with dask.config.set(scheduler="sync"):
        write_synthetic(path, models, layers, generate_filters(per_layer(gaussian()), layers, seed=5), chunk_rows=32)
    return path


@needs_slurm
@pytest.mark.timeout(300)
def test_worker_logs_go_to_the_database_and_end_without_cancellation(tmp_path):
    """`--cluster slurm` writes no slurm-<id>.out into the working folder: each worker job logs to
    DB/logs/slurm/ (made under the caller's umask), and its normal end is no cancellation: the
    job is COMPLETED and no line of its logs reads "error:" or "CANCELLED"."""
    name = f"fs-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path / "slurm.yaml", job_name=name, memory="1GiB", walltime="00:10:00")
    db = small_database(tmp_path / "db")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "filtershift", "analyze", str(db), "--cluster", "slurm", "--workers", "2", "--cluster-config", str(config),
         "--no-progress", "--dashboard-address", ":0"],
        cwd=cwd, capture_output=True, text=True, timeout=240, umask=0o027,
    )
    assert run.returncode == 0, run.stderr
    assert (db / "results" / "scaled" / "provenance.json").is_file()
    assert not list(cwd.iterdir()), "files left in the working folder"
    logs = db / "logs" / "slurm"
    assert (db / "logs").stat().st_mode & 0o777 == 0o750 and logs.stat().st_mode & 0o777 == 0o750
    err_files = sorted(logs.glob(f"{name}-*.err"))
    assert len(err_files) == 2 and len(list(logs.glob(f"{name}-*.out"))) == 2, sorted(p.name for p in logs.iterdir())
    for err in err_files:
        text = err.read_text() + err.with_suffix(".out").read_text()
        assert "Start worker" in text and "End worker" in text, text
        assert not no_error_lines(text), text
        state = job_state(err.stem.rsplit("-", 1)[1])
        assert (state.get("JobState"), state.get("ExitCode")) == ("COMPLETED", "0:0"), state
    assert not no_error_lines(run.stderr), run.stderr
    wait_until(lambda: no_jobs_left(name), 30, "the worker jobs to end")


def test_ctrl_c_stays_a_keyboard_interrupt_after_importing_jobqueue():
    """dask-jobqueue 0.9.0 replaces the SIGINT handler with sys.exit() at import; we undo that."""
    from filtershift.runtime.slurm import _import_jobqueue

    _import_jobqueue()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@needs_slurm
@pytest.mark.timeout(900)
def test_demo_job_on_slurm_equals_local(slurm_config, tmp_path):
    """The demo job (tiny zoo -> extract -> analyze) with --cluster slurm: workers arrive as SLURM
    jobs visible in squeue, and the zoo, database and results equal those of a local run."""
    import numpy as np
    import pandas as pd
    import yaml

    name, config = slurm_config
    write_config(config, job_name=name, memory="2GiB", walltime="00:15:00", log_directory=str(tmp_path / "slurm-logs"),
                 adaptive={"minimum-jobs": 1, "maximum-jobs": 2})
    demo = yaml.safe_load((REPO / "jobs" / "demo.yaml").read_text())
    for where in ("local", "slurm"):
        job = dict(demo, name=f"demo-{where}", zoo=dict(demo["zoo"], dir=f"{where}/zoo", size="tiny"), db=f"{where}/demo.db")
        job.pop("figures")
        (tmp_path / f"job-{where}.yaml").write_text(yaml.safe_dump(job))

    local = run_filtershift("run", "job-local.yaml", "--workers", "2", "--no-progress", "--dashboard-address", ":0", cwd=tmp_path, timeout=600)
    assert local.returncode == 0, local.stderr

    seen: set[str] = set()
    with subprocess.Popen(
        [sys.executable, "-m", "filtershift", "run", "job-slurm.yaml", "--cluster", "slurm", "--cluster-config", str(config),
         "--no-progress", "--dashboard-address", ":0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        try:
            while proc.poll() is None:  # watch the worker jobs come and go
                seen.update(job for job, state in queued(name) if state == "RUNNING")
                time.sleep(1)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert seen, "no worker job was ever RUNNING in squeue"
    wait_until(lambda: no_jobs_left(name), 30, "the worker jobs to be cancelled")
    worker_logs = sorted((tmp_path / "slurm-logs").glob(f"{name}-*.err"))
    assert worker_logs and not list(tmp_path.glob("slurm-*.out"))
    for err in worker_logs:  # also the jobs adaptive scaling let go during the run
        assert not no_error_lines(err.read_text()), err.read_text()

    log = [json.loads(line) for line in (tmp_path / "slurm" / "demo.db" / "results" / "pipeline.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["status"], r["cluster"]) for r in log] == [
        ("zoo", "done", "slurm"), ("extract", "done", "slurm"),
        ("analyze:scaled", "done", "slurm"), ("analyze:raw", "done", "slurm"), ("analyze:natural-first-decile", "done", "slurm"),
    ]
    for a, b in zip(database_tables(tmp_path / "local" / "demo.db"), database_tables(tmp_path / "slurm" / "demo.db"), strict=True):
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b)  # the models' sha256: the zoo trained identically
        else:
            np.testing.assert_array_equal(a, b)
    for analysis in ("scaled", "raw", "natural-first-decile"):
        results = {where: tmp_path / where / "demo.db" / "results" / analysis for where in ("local", "slurm")}
        pcas = {where: json.loads((path / "pca.json").read_text()) for where, path in results.items()}
        for key in ("mean", "components", "explained_variance_ratio", "n_filters"):
            np.testing.assert_allclose(pcas["local"][key], pcas["slurm"][key], rtol=1e-10)
        shifts = sorted(p.name for p in results["local"].glob("shift_*.csv"))
        assert shifts and shifts == sorted(p.name for p in results["slurm"].glob("shift_*.csv"))
        for shift in shifts:
            pd.testing.assert_frame_equal(pd.read_csv(results["local"] / shift), pd.read_csv(results["slurm"] / shift), rtol=1e-10)


def test_importing_filtershift_slurm_keeps_ctrl_c():
    """Only _import_jobqueue() may import dask-jobqueue (its import replaces the SIGINT handler)."""
    code = (
        "import signal, sys\n"
        "import filtershift.runtime.slurm, filtershift.commands.run\n"
        "from filtershift.cli import build_parser\n"
        "build_parser()\n"
        "filtershift.runtime.slurm.job_script(filtershift.runtime.slurm.resolve_slurm_settings())\n"
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, signal.getsignal(signal.SIGINT)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
