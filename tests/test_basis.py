"""Analyses on a frozen basis (issue 15 step 2): ``filtershift analyze DB --basis RESULTS --name NEW``.

A database is built on disk, analysed (the basis), then grown by appending models through the
store's own append path; the analysis on the basis must equal an ordinary analysis whose PCA and
bins are forced to the basis's (every output file), while reading only the appended rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest

import filtershift
from filtershift.analysis import results as res
from filtershift.analysis.compute import compute_analysis
from filtershift.analysis.plan import PlanError, chunk_blocks, make_plan
from filtershift.analysis.settings import AnalysisSettings
from filtershift.bench.synthetic import conv_like, generate_filters, model_tables
from filtershift.store import LAYERS_TABLE, MODELS_TABLE, open_database
from filtershift.store.database import append_rows, ensure_store, write_table

CHUNK_ROWS = 500
BY = ("task", "data_type", "depth_decile", "family", "task+data_type")
N_OLD, N_ALL = 8, 11


def tables(n_models: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first ``n_models`` of one fixed list: a prefix has the same ids and rows as the whole.
    Model 10 brings a task no earlier model has."""
    tasks = ("classification", "segmentation", "detection", "classification", "segmentation", "detection",
             "classification", "segmentation", "detection", "classification", "gan")
    metas = [{"name": f"m{i}", "task": tasks[i], "data_type": ("natural", "medical")[i % 2], "dataset": f"d{i % 3}",
              "family": ("resnet", "vgg", "unet")[i % 3]} for i in range(n_models)]
    sizes = [[40 + 17 * i + 23 * j for j in range(4 + i % 3)] for i in range(n_models)]
    return model_tables(metas, sizes)


def append(path: Path, models: pd.DataFrame, layers: pd.DataFrame, filters: np.ndarray, start: int) -> None:
    """Append rows ``start..`` of ``filters`` with the tables grown to ``models`` / ``layers``, as
    ``extract`` appends: rows after the existing ones, the tables committed last."""
    rows = filters[start:]
    ids = np.repeat(layers["layer_id"].to_numpy(np.int32), layers["n_filters"].to_numpy())[start:]
    with dask.config.set(scheduler="sync"):
        append_rows(ensure_store(path), start, da.from_array(rows, chunks=(CHUNK_ROWS, 9)), da.from_array(ids, chunks=CHUNK_ROWS))
    write_table(layers, path / LAYERS_TABLE)
    write_table(models, path / MODELS_TABLE)


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A database analysed as ``base`` with 8 models, then grown to 11 (its last chunk was partly
    filled, so the first appended rows share a chunk with basis rows)."""
    from filtershift.bench.synthetic import write_synthetic

    models, layers = tables(N_ALL)
    filters = generate_filters(conv_like, layers, seed=3)
    last = layers[layers["model_id"] == N_ALL - 1]  # checkerboard-like filters: outside the basis's range
    signs = np.random.default_rng(1).choice(np.float32([-1, 1]), size=(int(last["n_filters"].sum()), 9))
    filters[int(last["start"].min()) :] = signs * np.float32(0.3)
    old_models, old_layers = tables(N_OLD)
    n_old = int(old_layers["n_filters"].sum())
    assert n_old % CHUNK_ROWS  # the case that matters: a chunk holding old and new rows
    path = tmp_path_factory.mktemp("basis") / "db"
    with dask.config.set(scheduler="sync"):
        write_synthetic(path, old_models, old_layers, filters[:n_old], chunk_rows=CHUNK_ROWS)
        filtershift.analyze(path, by=list(BY), name="base", bootstrap=3)
    append(path, models, layers, filters, n_old)
    return path, n_old, layers


@pytest.fixture
def chunk_reads(monkeypatch):
    """The store chunks read, in order: a spy around the real ``StoreChunks.read`` (the reads run
    in this process on the synchronous scheduler)."""
    from filtershift.store.database import StoreChunks

    seen: list[int] = []
    real = StoreChunks.read

    def read(self, block):
        seen.append(int(block))
        return real(self, block)

    monkeypatch.setattr(StoreChunks, "read", read)
    return seen


def reference(path: Path, name: str) -> res.Results:
    """The ordinary reads over every row with the PCA and bins forced to the basis's."""
    db, base = open_database(path), res.load_results(path, "base")
    plan = make_plan(db.models, db.layers, db.chunk_rows, AnalysisSettings(by=BY, bootstrap=3))
    output = compute_analysis(db, plan, None, lambda msg: None, fixed=(base.pca, base.bins))
    res.write_analysis(path, name, output)
    return res.load_results(path, name)


def assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir() if p.name not in ("provenance.json", "dataset.zarr"))
    assert names == sorted(p.name for p in b.iterdir() if p.name not in ("provenance.json", "dataset.zarr"))
    assert "hist2d_all.npz" in names and "hist2d_task.npz" in names and "shift_task_ci.csv" in names
    for name in names:
        if name.endswith(".json"):
            assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name
        elif name.endswith(".npz"):
            with np.load(a / name) as x, np.load(b / name) as y:
                assert sorted(x.files) == sorted(y.files), name
                for k in x.files:
                    if x[k].dtype.kind in "iuUb":
                        np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}:{k}")
                    else:
                        np.testing.assert_allclose(x[k], y[k], rtol=1e-12, atol=0, err_msg=f"{name}:{k}")
        else:
            read = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
            pd.testing.assert_frame_equal(read(a / name), read(b / name), check_exact=False, rtol=1e-12, atol=0, obj=name)


def test_analysis_on_a_basis_equals_the_reads_with_its_pca_and_bins_and_reads_only_new_rows(grown, chunk_reads):
    path, n_old, layers = grown
    with dask.config.set(scheduler="sync"):
        on_basis = filtershift.analyze(path, by=list(BY), name="next", basis="base", bootstrap=3)
    read_on_basis = list(chunk_reads)
    ref = reference(path, "ref")
    assert_same_files(on_basis.path, ref.path)

    new = layers[layers["start"] >= n_old]
    blocks = chunk_blocks(new["start"].to_numpy(), new["stop"].to_numpy(), CHUNK_ROWS)
    assert blocks[0] == n_old // CHUNK_ROWS and len(blocks) < open_database(path).filters().numblocks[0]
    assert sorted(read_on_basis) == sorted(list(blocks) * 2)  # READ 2 and READ 3 of the chunks of new rows; no READ 1
    assert len(chunk_reads) - len(read_on_basis) == 2 * open_database(path).filters().numblocks[0]  # the reference reads all
    info = on_basis.basis_info
    assert on_basis.basis == "base" and on_basis.parameters["basis"] == "base"
    assert info["n_filters_read"] == int(new["n_filters"].sum()) and info["n_layers_read"] == len(new)
    assert info["n_filters_reused"] == n_old and info["n_layers_reused"] == len(layers) - len(new)
    assert on_basis.analysed["n_chunks_read"] == len(blocks) and on_basis.analysed["n_fit_chunks_read"] == 0
    assert info["hist2d_not_written"] == {} and set(on_basis.groupings_2d) == set(ref.groupings_2d)
    assert info["n_clipped"] == ref.basis_info["n_clipped"] > 0  # the appended models leave the basis's range
    assert info["clipped"] == info["n_clipped"] / (9 * info["n_filters_read"])


def test_a_basis_that_differs_in_scaling_selection_or_2d_bins_is_refused_naming_the_flag(grown, chunk_reads):
    path, _, _ = grown
    for options, flag in (({"scaling": "raw"}, "--scaling"), ({"where": "depth_decile < 5"}, "--where"),
                          ({"fit_on": "task == 'classification'"}, "--fit-on"), ({"pairs": "all"}, "--pairs"),
                          ({"bins_2d": 16}, "--bins-2d")):
        with pytest.raises(PlanError, match=f"--basis base was computed with .*{flag}.*give the same {flag}"):
            filtershift.analyze(path, by="task", name="other", basis="base", **options)
    with pytest.raises(PlanError, match="--basis base is also the --name .* another --name"):
        filtershift.analyze(path, by="task", name="base", basis="base")
    with pytest.raises(res.ResultsError, match=r"--basis nope: .*holds no complete analysis.*base.*`filtershift analyze .* --name nope`"):
        filtershift.analyze(path, by="task", name="other", basis="nope")
    assert chunk_reads == [] and not res.results_path(path, "other").exists()  # refused before any read


def test_the_command_line_takes_basis_and_a_regrouping_on_a_basis_reads_nothing(grown, chunk_reads, capsys):
    from filtershift.cli import main

    path, _, _ = grown
    assert main(["analyze", str(path), "--threads", "--by", "task", "--name", "cli", "--basis", "base"]) == 0
    assert "on the basis base" in capsys.readouterr().err
    cli = res.load_results(path, "cli")
    assert cli.basis == "base" and cli.analysed["n_chunks_read"] > 0
    n_reads = len(chunk_reads)
    regrouped = filtershift.analyze(path, by=["dataset", "task"], name="regrouped", basis="cli")
    assert len(chunk_reads) == n_reads and regrouped.basis_info["n_filters_read"] == 0  # every layer is in the basis
    pd.testing.assert_frame_equal(regrouped.shift("task"), cli.shift("task"), check_exact=True)
    # 2-D histograms of 'dataset' are not in the basis 'cli': not written, and said so
    assert regrouped.groupings_2d == ("all", "task") and "dataset" in regrouped.basis_info["hist2d_not_written"]
    assert regrouped.histograms_2d("dataset") is None
    np.testing.assert_array_equal(regrouped.histograms_2d("task").counts, cli.histograms_2d("task").counts)


def test_after_a_model_is_removed_the_basis_gives_its_other_layers_and_no_2d_histograms(synthetic_db):
    from filtershift.store import remove_models

    models, layers = tables(4)
    db = synthetic_db(models, layers, generate_filters(conv_like, layers, seed=5), chunk_rows=CHUNK_ROWS)
    base = filtershift.analyze(db.path, by="task", name="base")
    remove_models(db.path, ["m0"])
    after = filtershift.analyze(db.path, by="task", name="after", basis="base")
    ids, counts = base.layer_histograms()
    kept = ~np.isin(ids, layers.loc[layers["model_id"] == 0, "layer_id"])
    np.testing.assert_array_equal(after.layer_histograms()[0], ids[kept])
    np.testing.assert_array_equal(after.layer_histograms()[1], counts[kept])
    pd.testing.assert_frame_equal(after.layer_stats(), base.layer_stats()[kept].reset_index(drop=True))
    assert after.basis_info["n_filters_read"] == 0 and after.analysed["n_chunks_read"] == 0
    assert after.groupings_2d == () and set(after.basis_info["hist2d_not_written"]) == {"all", "task"}
    assert "cannot be taken out" in after.basis_info["hist2d_not_written"]["all"]
