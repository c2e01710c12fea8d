"""The public API (filtershift.open / extract / analyze, Results.dataset): the same results as the
command line on a client the caller opened and on threads, the client left running, labelled
results that xarray opens from disk, and a light ``import filtershift``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest

import filtershift
from filtershift import api
from filtershift.analysis.passes import chunks_per_task
from filtershift.cli import main
from filtershift.figures.synthetic import write_synthetic_database

API_DOC = Path(__file__).parent.parent / "docs" / "api.md"
BY = "task,data_type+task,model"
PASS_NAMES = ("pca-moments", "coefficient-range", "histograms")  # the task names of the three reads (analysis/passes.py)


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "db"
    with dask.config.set(scheduler="sync"):
        write_synthetic_database(path, filters_per_layer=48, chunk_rows=1024)  # 3456 filters in 4 chunks
    assert main(["analyze", str(path), "--by", BY, "--threads", "--name", "cli", "--bootstrap", "4", "--no-progress"]) == 0
    return path


def assert_same_results(a, b) -> None:
    """Every stored value of two analyses agrees exactly (shift matrices, PCA, histograms, tables)."""
    assert a.groupings == b.groupings and a.groupings_2d == b.groupings_2d
    np.testing.assert_array_equal(a.pca.components, b.pca.components)
    np.testing.assert_array_equal(a.pca.explained_variance_ratio, b.pca.explained_variance_ratio)
    np.testing.assert_array_equal(a.bins.edges, b.bins.edges)
    for by in a.groupings:
        pd.testing.assert_frame_equal(a.shift(by), b.shift(by))
        ci_a, ci_b = a.shift_ci(by), b.shift_ci(by)
        assert (ci_a is None) == (ci_b is None)
        if ci_a is not None:
            pd.testing.assert_frame_equal(ci_a, ci_b)
        ha, hb = a.histograms(by), b.histograms(by)
        assert ha.labels == hb.labels
        np.testing.assert_array_equal(ha.counts, hb.counts)
        np.testing.assert_array_equal(ha.probabilities, hb.probabilities)
    for by in a.groupings_2d:
        np.testing.assert_array_equal(a.histograms_2d(by).counts, b.histograms_2d(by).counts)
    for x, y in zip(a.layer_histograms() + a.model_histograms(), b.layer_histograms() + b.model_histograms()):
        np.testing.assert_array_equal(x, y)
    pd.testing.assert_frame_equal(a.layer_stats(), b.layer_stats())


def test_analyze_on_a_client_the_caller_opened_matches_the_cli_and_leaves_it_running(db_path):
    from dask.utils import key_split
    from distributed import Client, LocalCluster, get_task_stream

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        assert api.current_client() is client
        (db_path / "layer_moments.npz").unlink(missing_ok=True)  # READ 1 runs only for moments not stored yet
        with get_task_stream(client) as stream:  # the dashboard's task stream
            results = filtershift.analyze(filtershift.open(db_path), by=BY, name="client", bootstrap=4)
        assert client.status == "running" and api.current_client() is client
        assert client.submit(sum, [1, 2]).result() == 3
        assert len(cluster.scheduler.workers) == 2  # nothing was started or stopped on it
        names = [key_split(task["key"]) for task in stream.data]
        n_chunks = filtershift.open(db_path).filters.numblocks[0]
        n_tasks = -(-n_chunks // chunks_per_task(n_chunks))
        for read in PASS_NAMES:  # each read's tasks (fused with their first merge) carry its name
            assert sum(name.startswith(read) for name in names) >= n_tasks, (read, sorted(set(names)))
    assert results.name == "client" and results.parameters["by"] == ["task", "data_type+task", "model"]
    assert_same_results(results, filtershift.open(db_path).results("cli"))


def test_analyze_without_a_client_runs_threaded_and_matches_the_cli(db_path):
    with dask.config.set(scheduler=None):  # undo the tests' synchronous default: nothing chosen
        assert api.current_client() is None
        with api.default_scope():
            assert dask.config.get("scheduler") == "threads"
        results = filtershift.analyze(str(db_path), by=BY.split(","), name="threads", bootstrap=4)
        assert dask.config.get("scheduler") is None  # the threaded scope was left
    assert_same_results(results, filtershift.open(db_path).results("cli"))


def test_open_gives_tables_lazy_filters_and_analyses(db_path):
    db = filtershift.open(db_path)
    assert len(db.models) == 8 and len(db.layers) == 48 and db.n_filters == 3456
    assert db.filters.shape == (3456, 9) and db.filters.dtype == np.float32 and db.filters.numblocks == (4, 1)
    np.testing.assert_array_equal(db.layer_ids[:48].compute(), np.zeros(48, dtype=np.int32))
    assert "cli" in db.analyses() and db.results("cli").groupings == ("task", "data_type+task", "model")
    with pytest.raises(filtershift.ResultsError, match="filtershift analyze"):
        db.results("never")
    with pytest.raises(TypeError, match="unknown setting.*colour"):
        filtershift.analyze(db, colour="red")
    with pytest.raises(filtershift.FiltershiftError, match="no column colour"):
        filtershift.analyze(db, by="colour")
    assert "3,456 filters" in repr(db)


def test_dataset_round_trips_through_xarray_with_the_files_values_and_labels(db_path):
    import xarray as xr

    results = filtershift.open(db_path).results("cli")
    opened = xr.open_zarr(results.path / "dataset.zarr")
    xr.testing.assert_identical(results.dataset(), opened.load())
    for by in results.groupings:
        csv = pd.read_csv(results.path / f"shift_{by}.csv", index_col=0, dtype={"group": str})
        d = opened[f"shift_{by}"].to_pandas()
        assert list(d.index) == list(csv.index) and list(d.columns) == list(csv.columns)
        np.testing.assert_array_equal(d.to_numpy(), csv.to_numpy())
        with np.load(results.path / f"hist_{by}.npz") as z:
            assert opened[f"{by}_group"].values.tolist() == z["labels"].tolist()
            np.testing.assert_array_equal(opened[f"prob_{by}"].values, z["probabilities"])
            np.testing.assert_array_equal(opened[f"hist_{by}"].values, z["counts"])
            np.testing.assert_array_equal(opened["bin_edges"].values, z["edges"])
        counts = pd.read_csv(results.path / f"counts_{by}.csv", dtype={"group": str}).set_index("group")
        np.testing.assert_array_equal(opened[f"n_filters_{by}"].to_pandas(), counts.loc[opened[f"{by}_group"].values.tolist(), "n_filters"])
        ci = results.shift_ci(by)
        assert (ci is None) == (f"shift_{by}_low" not in opened)
        if ci is not None:
            low = opened[f"shift_{by}_low"]
            assert [float(low.sel({f"{by}_group_a": r.group_a, f"{by}_group_b": r.group_b})) for r in ci.itertuples()] == ci["low"].tolist()
    pca = json.loads((results.path / "pca.json").read_text())
    np.testing.assert_array_equal(opened["pca_components"].values, np.array(pca["components"]))
    np.testing.assert_array_equal(opened["explained_variance_ratio"].values, np.array(pca["explained_variance_ratio"]))
    with np.load(results.path / "hist2d_all.npz") as z:
        np.testing.assert_array_equal(opened["hist2d_all"].values, z["counts"])
        assert opened["pair_x"].values.tolist() == z["pairs"][:, 0].tolist()
    with np.load(results.path / "layer_histograms.npz") as z:
        np.testing.assert_array_equal(opened["layer_hist"].values, z["counts"])
        np.testing.assert_array_equal(opened["layer"].values, z["layer_id"])
    with np.load(results.path / "model_histograms.npz") as z:
        np.testing.assert_array_equal(opened["model_decile_hist"].values, z["decile_counts"])
    assert opened["model_name"].values.tolist() == results.models().sort_values("model_id")["name"].tolist()
    assert opened.attrs["name"] == "cli" and opened.attrs["database_fingerprint"] == results.database_fingerprint


def test_extract_builds_a_database_and_a_rerun_is_up_to_date(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    for seed in range(2):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3), torch.nn.Conv2d(8, 4, 1))
        torch.save(net.state_dict(), tmp_path / f"net{seed}.pt")
    pd.DataFrame({"path": ["net0.pt", "net1.pt"], "task": ["classification", "segmentation"]}).to_csv(tmp_path / "manifest.csv", index=False)
    report = filtershift.extract(tmp_path / "manifest.csv", tmp_path / "db", chunk_rows=64)
    assert report.n_new_models == 2 and report.n_new_filters == 2 * (8 * 3 + 8 * 8) and not report.n_failed
    db = filtershift.open(tmp_path / "db")
    assert db.filters.numblocks == (3, 1) and db.models["task"].tolist() == ["classification", "segmentation"]
    again = filtershift.extract(tmp_path / "manifest.csv", tmp_path / "db", log=sys.stderr)
    assert again.n_new_models == 0 and again.statuses["error"].eq("already in the database").all()
    assert "is up to date" in capsys.readouterr().err


def test_import_filtershift_is_light():
    code = (
        "import sys, time; t = time.perf_counter(); import filtershift; dt = time.perf_counter() - t; "
        "heavy = [m for m in ('torch', 'zarr', 'bokeh', 'distributed', 'dask', 'holoviews', 'xarray') if m in sys.modules]; "
        "print(heavy, f'{dt * 1000:.1f}')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]", out
    print(f"import filtershift: {out[1]} ms")  # measured, not asserted
    lazy = subprocess.run([sys.executable, "-c", "import filtershift; print(filtershift.analyze.__module__)"], capture_output=True, text=True, check=True)
    assert lazy.stdout.strip() == "filtershift.api"


def test_every_example_of_docs_api_md_runs(tmp_path, monkeypatch):
    """The ```python blocks of docs/api.md, in order, in one namespace, in a fresh folder."""
    blocks = re.findall(r"^```python\n(.*?)^```", API_DOC.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with dask.config.set(scheduler=None):  # the API's own default, as a reader's session has it
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"{API_DOC}:block{number}", "exec"), namespace)
    documented = set(re.findall(r"filtershift\.(\w+)", API_DOC.read_text()))
    assert set(filtershift.__all__) - {"__version__"} <= documented  # every public name has its section
