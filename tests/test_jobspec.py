"""Job specs (``filtershift run JOB.yaml``): validation before any work, the stage plan, and the
pipeline's skipping of current stages on a two-checkpoint manifest (threaded scheduler)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from filtershift.pipeline.jobspec import AnalysisSpec, JobSpecError, load_job, parse_job
from filtershift.pipeline.stages import describe_plan, read_log, run_job, stages

REPO = Path(__file__).resolve().parents[1]


def write_job(folder: Path, **doc) -> Path:
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def manifest(tmp_path) -> Path:
    """Two tiny PyTorch checkpoints and their manifest (100 3x3 filters in all)."""
    import torch

    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3)).state_dict(), folder / "a.pt")
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 8, 1)).state_dict(), folder / "b.pt")
    (folder / "manifest.csv").write_text("path,task\na.pt,classification\nb.pt,segmentation\n")
    return folder / "manifest.csv"


# --- validation: wrong key, wrong type, missing file -> an error naming it, before any work ------


@pytest.mark.parametrize("name", ["demo", "large"])
def test_shipped_jobs_are_valid(name):
    job = load_job(REPO / "jobs" / f"{name}.yaml", base=REPO)
    assert job.zoo is not None and job.analyses and job.figures
    assert [s.key for s in stages(job)][:2] == ["zoo", "extract"]
    assert all(p.is_absolute() for p in (job.db, job.zoo.dir, job.figures.out))


def test_real_data_job_needs_its_manifest(tmp_path):
    with pytest.raises(JobSpecError, match=r"manifest: no such file .*data/manifest.csv"):
        load_job(REPO / "jobs" / "real-data.yaml", base=tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("path\n")
    job = load_job(REPO / "jobs" / "real-data.yaml", base=tmp_path)
    assert job.manifest == tmp_path / "data" / "manifest.csv" and job.zoo is None


BASE = {"zoo": {"dir": "zoo"}, "db": "x.db", "analyses": [{"name": "s", "by": ["task"]}]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"analysis": []}, "analysis: unknown key; did you mean 'analyses'?"),
        ({"zoo": {"dir": "zoo", "sise": "small"}}, "zoo.sise: unknown key; did you mean 'size'?"),
        ({"zoo": {"dir": "zoo", "size": "huge"}}, "zoo.size: must be one of tiny, small, large, got 'huge'"),
        ({"zoo": {"size": "small"}}, "zoo.dir: missing; it is required"),
        ({"zoo": {"dir": "zoo", "seed": "one"}}, "zoo.seed: must be an integer >= 0"),
        ({"db": None}, "db: missing; it is required"),
        ({"db": 3}, "db: must be a non-empty string, got 3 (int)"),
        ({"analyses": {"name": "s"}}, "analyses: must be a list of analyses"),
        ({"analyses": [{"name": "s", "scaling": "scale"}]}, "analyses[0].scaling: must be one of scaled, raw, got 'scale'"),
        ({"analyses": [{"name": "s", "by": 7}]}, "analyses[0].by: must be a list of strings"),
        ({"analyses": [{"name": "s", "groupby": ["task"]}]}, "analyses[0].groupby: unknown key"),
        ({"analyses": [{"name": "s"}, {"name": "s"}]}, "analyses[1].name: 's' is used twice"),
        ({"analyses": [{"name": "s", "bootstrap": -1}]}, "analyses[0].bootstrap: must be an integer >= 0"),
        ({"figures": {"formats": ["pdf"]}}, "figures.formats: must be one of html, png, got 'pdf'"),
        ({"figures": {"analyses": ["nope"]}}, "figures.analyses: must be one of s, got 'nope'"),
        ({"manifest": "m.csv"}, "give exactly one of 'manifest: FILE'"),
        ({"extract": {"chunk_rows": 0}}, "extract.chunk_rows: must be an integer >= 1"),
    ],
)
def test_bad_specs_name_the_key_and_the_fix(tmp_path, change, message):
    doc = {**BASE, **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    path = write_job(tmp_path, **doc)
    with pytest.raises(JobSpecError) as err:
        load_job(path, base=tmp_path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_manifest_is_named(tmp_path):
    path = write_job(tmp_path, manifest="nowhere/manifest.csv", db="x.db")
    with pytest.raises(JobSpecError, match=r"manifest: no such file .*nowhere/manifest.csv \(relative paths are relative to"):
        load_job(path, base=tmp_path)


def test_defaults_and_paths(tmp_path, manifest):
    job = parse_job({"manifest": str(manifest), "db": "out/x.db", "analyses": [{"scaling": "raw", "by": "task, depth_decile"}], "figures": True},
                    tmp_path / "j.yaml", tmp_path)
    assert job.name == "j" and job.db == tmp_path / "out" / "x.db"
    assert job.analyses == (AnalysisSpec(name="raw", scaling="raw", by=("task", "depth_decile")),)
    assert job.figures.out == tmp_path / "out" / "x.db" / "figures" and job.figures.formats == ("html",)
    assert [s.key for s in stages(job)] == ["extract", "analyze:raw", "figures:raw"]


def test_run_command_fails_before_any_work(tmp_path):
    path = write_job(tmp_path, zoo={"dir": "zoo", "size": "small"}, db="x.db", analyses=[{"name": "s", "scaling": 1}])
    t = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "filtershift", "run", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "analyses[0].scaling: must be one of scaled, raw, got 1 (int)" in run.stderr
    assert "dask dashboard" not in run.stderr  # no cluster was started
    assert not (tmp_path / "zoo").exists() and not (tmp_path / "x.db").exists()
    assert time.monotonic() - t < 60


def test_unknown_grouping_column_fails_before_any_work(tmp_path, manifest, capsys):
    from filtershift.cli import main

    path = write_job(tmp_path, manifest=str(manifest), db="x.db", analyses=[{"name": "s", "by": ["task", "architecture"]}])
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "analyses[0].by: no column architecture" in err and "family" in err


# --- the pipeline: stages in order, current ones skipped, a JSON-lines log ----------------------


def test_pipeline_skips_current_stages_and_logs_each(tmp_path, manifest, capsys):
    job = parse_job(
        {"manifest": str(manifest), "db": "x.db", "analyses": [{"name": "a", "by": ["task"]}, {"name": "b", "scaling": "raw", "by": ["depth_decile"]}]},
        tmp_path / "job.yaml", tmp_path,
    )
    first = run_job(job, show_progress=False)
    assert [(r.stage, r.status) for r in first] == [("extract", "done"), ("analyze:a", "done"), ("analyze:b", "done")]
    assert first[0].volume["filters_new"] == 100 and first[1].volume["filters"] == 100
    assert (job.db / "results" / "a" / "shift_task.csv").is_file()
    assert "[2/3] analyze:a: running" in capsys.readouterr().err

    second = run_job(job, show_progress=False)
    assert [r.status for r in second] == ["skipped"] * 3
    assert "skip" in describe_plan(job) and " run " not in describe_plan(job)

    # another setting of one analysis reruns only that analysis
    changed = parse_job(
        {"manifest": str(manifest), "db": "x.db", "analyses": [{"name": "a", "by": ["task"]}, {"name": "b", "scaling": "raw", "by": ["task"]}]},
        tmp_path / "job.yaml", tmp_path,
    )
    third = run_job(changed, show_progress=False)
    assert [r.status for r in third] == ["skipped", "skipped", "done"]

    # a new checkpoint: extract runs, and so does every analysis (the database changed)
    import torch

    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)).state_dict(), manifest.parent / "c.pt")
    manifest.write_text(manifest.read_text() + "c.pt,classification\n")
    fourth = run_job(changed, show_progress=False)
    assert [r.status for r in fourth] == ["done", "done", "done"]
    assert fourth[0].volume["models_new"] == 1

    log = list(read_log(job.db))
    assert len(log) == 12
    assert set(log[0]) == {"job", "stage", "status", "reason", "started", "seconds", "volume", "cluster"}
    assert all(isinstance(r["seconds"], float) for r in log)
    json.dumps(log)


def test_interrupt_is_logged_and_reraised(tmp_path, manifest, monkeypatch):
    import filtershift.pipeline.stages as pipeline

    job = parse_job({"manifest": str(manifest), "db": "x.db"}, tmp_path / "job.yaml", tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, show_progress=False)
    assert [(r["stage"], r["status"]) for r in read_log(job.db)] == [("extract", "interrupted")]


def test_figures_stage_draws_once_and_follows_its_results(tmp_path, manifest):
    job = parse_job({"manifest": str(manifest), "db": "x.db", "analyses": [{"name": "a", "by": ["task"]}], "figures": {"out": "figs"}},
                    tmp_path / "job.yaml", tmp_path)
    first = run_job(job, show_progress=False)
    assert [(r.stage, r.status) for r in first] == [("extract", "done"), ("analyze:a", "done"), ("figures:a", "done")]
    stamp = json.loads((tmp_path / "figs" / "a" / "figures.json").read_text())
    assert stamp["files"] and all((tmp_path / "figs" / "a" / f).is_file() for f in stamp["files"])
    assert all(f.endswith(".html") for f in stamp["files"]) and first[2].volume["files"] == len(stamp["files"])
    assert [r.status for r in run_job(job, show_progress=False)] == ["skipped"] * 3
    # new results (forced rerun) -> the figures are stale and are drawn again
    assert [r.status for r in run_job(job, force=True, show_progress=False)] == ["done"] * 3


def test_figures_are_skipped_when_unavailable(tmp_path, manifest, monkeypatch):
    import filtershift.pipeline.stages as pipeline

    monkeypatch.setattr(pipeline, "figures_available", lambda: "figures unavailable (no holoviews)")
    job = parse_job({"manifest": str(manifest), "db": "x.db", "analyses": [{"name": "a", "by": ["task"]}], "figures": True},
                    tmp_path / "job.yaml", tmp_path)
    records = run_job(job, show_progress=False)
    assert (records[-1].stage, records[-1].status, records[-1].reason) == ("figures:a", "skipped", "figures unavailable (no holoviews)")


def test_a_job_spec_sets_every_analysis_option(tmp_path):
    from filtershift.analysis.plan import make_plan
    from filtershift.analysis.settings import AnalysisSettings

    doc = {"manifest": "m.csv", "db": "x.db", "analyses": [
        {"name": "p", "by": "task", "pairs": "all", "bins_2d": 16, "max_groups_2d": 2, "pca": "incremental"}]}
    (tmp_path / "m.csv").write_text("name,path\n")
    job = parse_job(doc, tmp_path / "job.yaml", tmp_path)
    assert job.analyses == (AnalysisSettings(name="p", by=("task",), pairs="all", bins_2d=16, max_groups_2d=2, pca="incremental"),)
    with pytest.raises(JobSpecError, match=r"analyses\[0\]\.bins_2d: must be an integer >= 1, got 0"):
        parse_job({**doc, "analyses": [{"bins_2d": 0}]}, tmp_path / "job.yaml", tmp_path)
    with pytest.raises(JobSpecError, match=r"analyses\[0\]\.pairs: must be one of consecutive, all"):
        parse_job({**doc, "analyses": [{"pairs": "some"}]}, tmp_path / "job.yaml", tmp_path)
    models = pd.DataFrame({"model_id": [0], "name": ["a"], "task": ["t"]})
    layers = pd.DataFrame({"layer_id": [0], "model_id": [0], "name": ["c"], "start": [0], "stop": [20]})
    plan = make_plan(models, layers, 8, job.analyses[0])
    assert (plan.n_bins_2d, plan.max_groups_2d, len(plan.pairs), plan.pca_method) == (16, 2, 36, "incremental")
