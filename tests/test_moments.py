"""Stored per-layer PCA moments (DB/layer_moments.npz) and reads that never open the ``layer`` array.

- the PCA from stored moments equals the PCA from a read of the filters to 1e-12 (both scalings,
  --where / --fit-on selections, 1, 2 and 4 chunks);
- a database without stored moments gets them in one read, and the next analysis reads none;
- a busy or read-only database, a stale or damaged moments file never change a result;
- extraction and the CNN-Filter-DB import store the moments of what they commit;
- the analysis reads run with the ``layer`` array gone from disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask
import numpy as np
import pytest

from filtershift.analysis import fitmoments, passes
from filtershift.analysis.compute import analyze
from filtershift.analysis.moments import SUB_ROWS, layer_moments, to_layer_moments
from filtershift.analysis.pca import Moments, pca_from_moments, prepare
from filtershift.analysis.plan import make_plan
from filtershift.analysis.results import load_results
from filtershift.store import FILTERS_STORE, open_database, writer_lock
from filtershift.store.moments import MOMENTS_FILE, read_moments

from tests.test_analysis_reference import FILTERS, LAYERS, MODELS, N

SELECTIONS = [
    {},
    {"where": "task != 'gan'"},
    {"fit_on": "data_type == 'natural'"},
    {"where": "depth_decile >= 3", "fit_on": "family == 'vgg'"},
]


def make_db(synthetic_db, n_chunks: int = 3):
    return synthetic_db(MODELS, LAYERS, FILTERS, chunk_rows=-(-N // n_chunks))


def run(db, name: str = "t", **settings):
    with dask.config.set(scheduler="sync"):
        plan = make_plan(db.models, db.layers, db.chunk_rows, by=["task"], **settings)
        analyze(db, plan, name, log=False)
    return load_results(db.path, name)


def read_pca(db, plan):
    """The PCA from a read of the fit rows (the former READ 1)."""
    m = passes.moments_pass(db.chunks(), None, plan.fit_blocks, plan.fit_lookup, plan.scaling)
    return pca_from_moments(m, plan.scaling)


@pytest.mark.parametrize("n_chunks", [1, 2, 4])
@pytest.mark.parametrize("scaling", ["scaled", "raw"])
@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: ",".join(s) or "all")
def test_pca_from_stored_moments_equals_a_read(synthetic_db, n_chunks, scaling, selection):
    db = make_db(synthetic_db, n_chunks)
    plan = make_plan(db.models, db.layers, db.chunk_rows, scaling=scaling, **selection)
    with dask.config.set(scheduler="sync"):
        first = fitmoments.fit_moments(db, plan, db.chunks())  # reads and stores
        again = fitmoments.fit_moments(db, plan, db.chunks())  # from the file alone
        expected = read_pca(db, plan)
    assert first.n_layers_read > 0 and again.n_layers_read == 0 and again.n_chunks_read == 0
    for got in (first.moments, again.moments):
        pca = pca_from_moments(got, scaling)
        assert pca.n_filters == plan.n_fit == expected.n_filters
        np.testing.assert_allclose(pca.mean, expected.mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(pca.components, expected.components, rtol=0, atol=1e-12)
        np.testing.assert_allclose(pca.explained_variance, expected.explained_variance, rtol=1e-12, atol=1e-15)


def test_layer_moments_are_the_moments_of_each_layer():
    sizes = LAYERS["n_filters"].to_numpy()
    lm = layer_moments(FILTERS, LAYERS["layer_id"].to_numpy(), sizes)
    for k, (a, b) in enumerate(zip(LAYERS["start"], LAYERS["stop"])):
        for scaling, stacked in (("raw", lm.raw), ("scaled", lm.scaled)):
            ref = Moments.of(prepare(FILTERS[a:b], scaling))
            assert stacked.n[k] == b - a
            np.testing.assert_allclose(stacked.mean[k], ref.mean, rtol=0, atol=1e-14)
            np.testing.assert_allclose(stacked.m2[k], ref.m2, rtol=1e-12, atol=1e-13)
    # pieces of a layer merge into the layer
    a, b = int(LAYERS["start"][0]), int(LAYERS["stop"][0])
    half = (a + b) // 2
    pieces = layer_moments(FILTERS[a:b], [0, 0], [half - a, b - half])
    whole = pieces.take([0]).merge(pieces.take([1]))
    np.testing.assert_allclose(whole.scaled.m2[0], lm.scaled.m2[0], rtol=1e-12, atol=1e-13)


AWKWARD_SIZES = [1, 0, SUB_ROWS - 1, SUB_ROWS, SUB_ROWS + 1, 2, 100, 3 * SUB_ROWS + 17, 0, 5 * SUB_ROWS]


def _plain_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and centred scatter of the float64 rows ``x`` in one piece (np.cov's arithmetic)."""
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        return np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
    mean = x.mean(axis=0)
    return mean, (x - mean).T @ (x - mean)


def _plain_scaled(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = np.abs(x).max(axis=1)
    return x / np.where(m == 0, 1.0, m)[:, None]


def test_layer_moments_equal_a_plain_computation_for_awkward_sizes():
    """Sub-blocks of SUB_ROWS with a partial last one, 1-row and empty layers, all-zero rows, and
    sub-block means that drift (so the merge's between-block term matters), to 1e-12."""
    sizes = np.array(AWKWARD_SIZES, np.int64)
    rng = np.random.default_rng(7)
    n = int(sizes.sum())
    drift = np.linspace(0.0, 0.3, n)[:, None] * rng.standard_normal(9)
    x = (rng.standard_normal((n, 9)) * 0.05 + 0.02 + drift).astype(np.float32)
    x[rng.choice(n, 500, replace=False)] = 0.0
    lm = layer_moments(x, np.arange(len(sizes)) + 10, sizes)
    assert lm.layer_id.tolist() == (np.arange(len(sizes)) + 10).tolist()
    stops = np.cumsum(sizes)
    for k, (a, b) in enumerate(zip(stops - sizes, stops)):
        for form, stacked in ((x[a:b], lm.raw), (_plain_scaled(x[a:b]), lm.scaled)):
            mean, m2 = _plain_moments(form)
            assert stacked.n[k] == b - a
            scale = max(float(np.abs(m2).max()), 1e-300)
            np.testing.assert_allclose(stacked.mean[k], mean, rtol=0, atol=1e-12 * max(float(np.abs(mean).max()), 1e-300))
            np.testing.assert_allclose(stacked.m2[k], m2, rtol=0, atol=1e-12 * scale)
            if b - a == 1:
                assert not stacked.m2[k].any()


def test_layer_moments_carry_non_finite_rows():
    """A NaN or Inf row makes its layer's moments non-finite (the analysis refuses them, naming the
    layer); the other layers are untouched."""
    sizes = np.array([SUB_ROWS + 5, 300, 40, SUB_ROWS * 2], np.int64)
    x = (np.random.default_rng(3).standard_normal((int(sizes.sum()), 9)) * 0.05).astype(np.float32)
    x[SUB_ROWS + 5 + 17, 4] = np.nan
    x[SUB_ROWS + 5 + 300 + 3, 0] = np.inf
    x[-1, 8] = -np.inf
    lm = layer_moments(x, np.arange(4), sizes)
    for stacked in (lm.raw, lm.scaled):
        finite = [bool(np.isfinite(stacked.mean[k]).all() and np.isfinite(stacked.m2[k]).all()) for k in range(4)]
        assert finite == [True, False, False, False]
    mean, m2 = _plain_moments(x[: sizes[0]])
    np.testing.assert_allclose(lm.raw.m2[0], m2, rtol=0, atol=1e-12 * np.abs(m2).max())


def test_database_without_moments_gets_them_once_then_reuses_them(synthetic_db, monkeypatch):
    db = make_db(synthetic_db)
    assert not (db.path / MOMENTS_FILE).exists()
    reads = []
    real = passes.layer_moments_pass
    monkeypatch.setattr(fitmoments, "layer_moments_pass", lambda *a: reads.append(a[1]) or real(*a))
    first = run(db, "a")
    assert len(reads) == 1 and (db.path / MOMENTS_FILE).exists()
    assert first.provenance["fit_moments"]["stored"] == "stored"
    assert first.provenance["fit_moments"]["n_layers_read"] == int((LAYERS["n_filters"] > 0).sum())
    stored = read_moments(db.path)
    assert sorted(stored["layer_id"].tolist()) == sorted(LAYERS.loc[LAYERS["n_filters"] > 0, "layer_id"].tolist())
    second = run(open_database(db.path), "b", fit_on="task == 'gan'")
    assert len(reads) == 1, "the second analysis read the filters for moments"
    assert second.provenance["fit_moments"] == {"how": "from stored moments", "n_layers_stored": second.provenance["fit_moments"]["n_layers_stored"],
                                                "n_layers_read": 0, "n_chunks_read": 0, "stored": None}
    np.testing.assert_array_equal(run(db, "c").pca.components, first.pca.components)


def test_busy_or_read_only_database_computes_moments_without_storing(synthetic_db, monkeypatch):
    db = make_db(synthetic_db)
    with writer_lock(db.path):  # another writer (an extraction) holds the database
        busy = run(db, "busy")
    assert "not stored" in busy.provenance["fit_moments"]["stored"] and not (db.path / MOMENTS_FILE).exists()
    monkeypatch.setattr("filtershift.store.moments.atomic_write", _read_only)
    ro = run(db, "ro")
    assert "cannot write" in ro.provenance["fit_moments"]["stored"] and not (db.path / MOMENTS_FILE).exists()
    np.testing.assert_array_equal(busy.pca.components, ro.pca.components)


def _read_only(*args, **kwargs):
    raise PermissionError(13, "Read-only file system")


def test_stale_or_damaged_moments_are_recomputed(synthetic_db):
    db = make_db(synthetic_db)
    reference = run(db, "ref")
    target = db.path / MOMENTS_FILE
    stored = read_moments(db.path)
    wrong = dict(stored, scaled_mean=stored["scaled_mean"] + 1.0, start=stored["start"] + 1)  # rows of another store
    np.savez(target, **wrong)
    assert len(db.layer_moments()["layer_id"]) == 0  # no entry matches a layer: all ignored
    again = run(db, "stale")
    assert again.provenance["fit_moments"]["n_layers_read"] > 0
    np.testing.assert_allclose(again.pca.components, reference.pca.components, rtol=0, atol=1e-12)
    target.write_bytes(b"PK\x03\x04 not a zip")
    assert read_moments(db.path) is None
    assert run(db, "damaged").provenance["fit_moments"]["stored"] == "stored"
    assert read_moments(db.path) is not None


def test_reads_never_open_the_layer_array(synthetic_db):
    db = make_db(synthetic_db, 4)
    before = run(db, "before", fit_on="data_type == 'medical'")
    (db.path / MOMENTS_FILE).unlink()  # READ 1 reads again too
    layer = db.path / FILTERS_STORE / "layer"
    layer.rename(layer.with_name("layer-gone"))
    try:
        opened = open_database(db.path)
        after = run(opened, "after", fit_on="data_type == 'medical'")
        incremental = run(opened, "inc", pca="incremental")
    finally:
        layer.with_name("layer-gone").rename(layer)
    np.testing.assert_array_equal(after.pca.components, before.pca.components)
    np.testing.assert_array_equal(after.layer_histograms()[1], before.layer_histograms()[1])
    assert incremental.pca.method == "incremental"


def test_cnnfilterdb_import_stores_the_moments(tmp_path):
    from filtershift.cnnfilterdb import import_file

    from tests.test_cnnfilterdb import reference_tables, write_reference

    filters, meta = reference_tables()
    write_reference(tmp_path / "in.h5", filters, meta)
    import_file(tmp_path / "in.h5", tmp_path / "db", chunk_rows=37, batch_chunks=2, scheduler="synchronous")
    db = open_database(tmp_path / "db")
    stored = to_layer_moments(db.layer_moments())
    rows = db.read_rows()[0]
    assert sorted(stored.layer_id.tolist()) == sorted(db.layers["layer_id"].tolist())
    for layer in db.layers.itertuples():
        k = int(np.flatnonzero(stored.layer_id == layer.layer_id)[0])
        ref = Moments.of(prepare(rows[layer.start:layer.stop], "scaled"))
        np.testing.assert_allclose(stored.scaled.m2[k], ref.m2, rtol=1e-12, atol=1e-13)


def test_extraction_stores_the_moments_of_what_it_commits(tmp_path, tests_arch):
    from tests.nets import make_model, save_all_formats
    from tests.test_extract import extract, write_manifest

    paths = save_all_formats(make_model(0), tmp_path, "m0")
    rows = [{"path": p.name, "name": f"m0-{kind}", "arch": "" if kind in ("torchscript", "onnx") else "tests:mixed"}
            for kind, p in list(paths.items())[:2]]
    extract(write_manifest(tmp_path, rows[:1]), tmp_path / "db")
    extract(write_manifest(tmp_path, rows), tmp_path / "db")  # an append (same content: skipped) keeps them
    db = open_database(tmp_path / "db")
    stored = to_layer_moments(db.layer_moments())
    assert sorted(stored.layer_id.tolist()) == sorted(db.layers.loc[db.layers["n_filters"] > 0, "layer_id"].tolist())
    rows_ = db.read_rows()[0]
    for layer in db.layers.itertuples():
        k = int(np.flatnonzero(stored.layer_id == layer.layer_id)[0])
        ref = Moments.of(prepare(rows_[layer.start:layer.stop], "raw"))
        np.testing.assert_allclose(stored.raw.mean[k], ref.mean, rtol=0, atol=1e-14)


def test_written_checkpoints_stage_their_moments_and_edges_only(tmp_path, tests_arch):
    """A written checkpoint stages its layers' moments and its edge rows, never its kernels, and
    the moments recorded after the commit are those of the rows in the store."""
    from filtershift.extraction.layermoments import staged_moments
    from filtershift.extraction.manifest import read_manifest
    from filtershift.extraction.staging import Placement, load_edges, read_checkpoint, write_checkpoint
    from filtershift.store import ensure_store, grow_rows
    from tests.nets import make_model, save_all_formats
    from tests.test_extract import write_manifest

    path = save_all_formats(make_model(0), tmp_path, "m0")["state_dict"]
    entry = read_manifest(write_manifest(tmp_path, [{"path": path.name, "name": "m0", "arch": "tests:mixed"}]))[0]
    checkpoint = read_checkpoint(entry, str(tmp_path / "staging"))
    assert checkpoint.staged.status == "ok", checkpoint.staged.error
    kernels, n = checkpoint.kernels, checkpoint.staged.n_filters
    chunk = 16
    group = ensure_store(tmp_path / "db", chunk_rows=chunk)
    grow_rows(group, 5 + n)
    staged = write_checkpoint(checkpoint, entry, Placement(start=5, first_layer=100), str(tmp_path / "db" / FILTERS_STORE), chunk,
                              str(tmp_path / "staging"))
    folder = Path(staged.folder)
    assert sorted(p.name for p in folder.iterdir()) == ["edges.npz", "layers.json", "moments.npz", "summary.json"]
    edges = load_edges(staged.folder)
    head, tail = len(edges["head_filters"]), len(edges["tail_filters"])
    assert head == chunk - 5 and head + tail < 2 * chunk < n  # only the rows of shared chunks are staged
    np.testing.assert_array_equal(edges["head_filters"], kernels[:head])
    np.testing.assert_array_equal(edges["tail_filters"], kernels[n - tail:])
    stored = group["filters"][5 + head:5 + n - tail]
    np.testing.assert_array_equal(stored, kernels[head:n - tail])  # the whole chunks, written directly
    sizes = np.array(json.loads((folder / "layers.json").read_text())["n_filters"], np.int64)
    ids = np.arange(100, 100 + len(sizes))
    expected = layer_moments(kernels, ids, sizes)
    got = staged_moments(staged.folder, 100, len(sizes))
    np.testing.assert_array_equal(got.layer_id, ids)
    for scaling in ("raw", "scaled"):
        np.testing.assert_array_equal(got.of_scaling(scaling).m2, expected.of_scaling(scaling).m2)
        np.testing.assert_array_equal(got.of_scaling(scaling).mean, expected.of_scaling(scaling).mean)
    (folder / "moments.npz").unlink()
    assert staged_moments(staged.folder, 100, len(sizes)) is None  # missing: left to the analysis




@pytest.mark.parametrize("n_chunks", [1, 2, 4])
def test_chunk_reads_are_the_zarr_arrays(synthetic_db, n_chunks):
    """A task's chunk read straight from the chunk file (plain float32, no codec) is zarr's array
    of those rows, a partial last chunk included; a chunk that is not a whole plain file, or a
    store with a codec, is decoded by zarr."""
    import zarr

    db = make_db(synthetic_db, n_chunks)
    chunks = db.chunks()
    filters = zarr.open_group(str(db.path / FILTERS_STORE), mode="r")["filters"]
    n_blocks = -(-db.n_rows // db.chunk_rows)
    for b in range(n_blocks):
        x, _ = chunks.read(b)
        rows = min(db.chunk_rows, db.n_rows - b * db.chunk_rows)
        plain = chunks._plain_chunk(b, rows)
        assert plain is not None and plain.dtype == np.float32 and plain.shape == (rows, 9)
        np.testing.assert_array_equal(plain, filters[b * db.chunk_rows : b * db.chunk_rows + rows])
        np.testing.assert_array_equal(x, plain)
    last = db.path / FILTERS_STORE / "filters" / "c" / str(n_blocks - 1) / "0"
    last.write_bytes(last.read_bytes()[:-4])  # not a whole chunk: zarr decides (here: it refuses)
    assert chunks._plain_chunk(n_blocks - 1, 1) is None
    meta = db.path / FILTERS_STORE / "filters" / "zarr.json"
    spec = json.loads(meta.read_text())
    spec["codecs"].append({"name": "crc32c"})
    meta.write_text(json.dumps(spec))
    assert chunks._plain_chunk(0, 1) is None
