"""``filtershift analyze`` end to end: once on the threaded scheduler, once on a LocalCluster."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from filtershift.analysis.results import ResultsError, load_results
from filtershift.bench.synthetic import gaussian, generate_filters, model_tables, per_layer
from filtershift.cli import main


@pytest.fixture(scope="module")
def small_db(synthetic_db):
    return _write_small_db(synthetic_db)


def _write_small_db(synthetic_db, poison: dict | None = None):
    """Six layers of three models; ``poison`` sets single weights ({(row, column): value})."""
    meta = [{"name": name, "format": "torch", "task": task, "data_type": data_type, "dataset": "d", "family": family}
            for name, task, data_type, family in (("a", "cls", "natural", "resnet"), ("b", "cls", "medical", "vgg"), ("c", "seg", "natural", "resnet"))]
    models, layers = model_tables(meta, [[40, 90], [30, 120], [60, 75]], layer_name="c{}")
    filters = generate_filters(per_layer(gaussian(row_scale=(0.1, 1))), layers, seed=7)
    for (row, col), value in (poison or {}).items():
        filters[row, col] = value
    return synthetic_db(models, layers, filters, chunk_rows=128).path


def test_analyze_threads(small_db, capsys):
    assert main(["analyze", str(small_db), "--by", "task,depth_decile,model", "--threads", "--name", "thr", "--bootstrap", "10"]) == 0
    res = load_results(small_db, "thr")
    assert res.groupings == ("task", "depth_decile", "model")
    assert res.shift("task").shape == (2, 2) and res.shift_ci("task") is not None
    prov = res.provenance
    assert prov["parameters"]["bootstrap"] == 10 and prov["database"]["n_rows"] == 415
    assert set(prov["timing"]) >= {"read_1_moments", "read_2_range", "read_3_histograms", "total"}
    assert prov["versions"]["numpy"] == np.__version__ and len(prov["database"]["fingerprint"]) == 64
    pca = json.loads((res.path / "pca.json").read_text())
    assert set(pca) >= {"mean", "components", "explained_variance", "explained_variance_ratio", "n_filters", "scaling"}
    assert res.histograms_2d("all").counts.sum() == 415 * 8
    with pytest.raises(ResultsError, match="Rerun"):
        res.shift("family")


def test_analyze_bad_input_exits_2(small_db, capsys):
    assert main(["analyze", str(small_db), "--by", "colour", "--threads"]) == 2
    assert "no column colour" in capsys.readouterr().err
    with pytest.raises(ResultsError, match="filtershift analyze"):
        load_results(small_db, "never")


def test_analyze_refuses_nan_and_inf_filters_naming_their_layers(synthetic_db, capsys):
    # rows 5 and 300: layers 0 (decile 0) and 4 (decile 0); a store extract would never write
    db = _write_small_db(synthetic_db, poison={(5, 2): np.nan, (300, 7): np.inf})
    assert main(["analyze", str(db), "--threads", "--fit-on", "depth_decile == 9"]) == 2
    err = capsys.readouterr().err
    assert "2 filter(s) in layer 0 (c0 of model 0), layer 4 (c0 of model 2) hold NaN or Inf" in err and "Traceback" not in err
    for pca in ("covariance", "incremental"):
        assert main(["analyze", str(db), "--threads", "--name", "fit-all", "--pca", pca]) == 2
        err = capsys.readouterr().err
        assert "the filters the PCA is fitted on hold NaN or Inf" in err and "Traceback" not in err, (pca, err)
    assert main(["analyze", str(db), "--threads", "--where", "depth_decile == 9", "--name", "clean"]) == 0
    assert load_results(db, "clean").layer_stats()["variance_entropy"].notna().all()
    folder = db / "results" / "clean"
    stored = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}  # dataset.zarr is a folder
    assert main(["analyze", str(db), "--threads", "--name", "clean"]) == 2  # a failed rerun under the same name
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == stored, "the failed run touched stored results"
    assert load_results(db, "clean").provenance["parameters"]["where"] == "depth_decile == 9"


def test_analyze_local_cluster_matches_threads(small_db):
    assert main(["analyze", str(small_db), "--by", "task", "--threads", "--name", "ref"]) == 0
    args = ["analyze", str(small_db), "--by", "task", "--name", "lc", "--workers", "1", "--threads-per-worker", "2", "--dashboard-address", ":0"]
    assert main(args) == 0
    a, b = load_results(small_db, "ref"), load_results(small_db, "lc")
    np.testing.assert_array_equal(a.pca.components, b.pca.components)
    pd.testing.assert_frame_equal(a.shift("task"), b.shift("task"))
    pd.testing.assert_frame_equal(a.layer_stats(), b.layer_stats())


def test_two_analyses_under_one_name_one_writes_the_other_fails_at_once(synthetic_db):
    """A is paused (SIGSTOP at a failpoint) holding its results lock; B under the same name fails at
    once with a clear message and touches nothing; another name runs; A then finishes alone."""
    import os
    import signal
    import subprocess
    import sys

    db = _write_small_db(synthetic_db)
    command = [sys.executable, "-m", "filtershift", "analyze", str(db), "--threads", "--no-progress", "--by", "task"]
    env = dict(os.environ, FILTERSHIFT_FAILPOINT="analyze:computed", FILTERSHIFT_FAILPOINT_ACTION="stop")
    first = subprocess.Popen(command + ["--name", "x", "--scaling", "raw"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)  # returns once A has stopped itself at the failpoint
        assert os.WIFSTOPPED(status), "the first analysis ended before reaching its failpoint"
        second = subprocess.run(command + ["--name", "x", "--scaling", "scaled"], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert "is being computed by another `filtershift analyze`" in second.stderr and "--name" in second.stderr
        assert "Traceback" not in second.stderr
        assert not (db / "results" / "x").exists()  # B wrote nothing; A has not written yet
        other = subprocess.run(command + ["--name", "y"], capture_output=True, text=True, timeout=300)
        assert other.returncode == 0, other.stderr
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert load_results(db, "x").pca.scaling == "raw"  # A's results, whole
    assert load_results(db, "y").pca.scaling == "scaled"


def test_every_analysis_option_is_a_job_key_and_a_flag():
    """One settings object: each field is a job-spec key and an `analyze` flag with the same default."""
    import argparse

    from filtershift.analysis import settings as S
    from filtershift.pipeline.jobspec import ANALYSIS_KEYS

    parser = argparse.ArgumentParser()
    S.add_arguments(parser)
    parsed = S.from_args(parser.parse_args([]))
    assert parsed == S.AnalysisSettings()
    assert ANALYSIS_KEYS == tuple(f.name for f in S.options())
    assert {"pairs", "bins_2d", "max_groups_2d"} <= set(ANALYSIS_KEYS)
    flags = S.from_args(parser.parse_args(["--pairs", "all", "--bins-2d", "16", "--max-groups-2d", "3", "--by", "task,task, model"]))
    assert (flags.pairs, flags.bins_2d, flags.max_groups_2d, flags.by) == ("all", 16, 3, ("task", "model"))
