"""CNN-Filter-DB import/export (issue 9): small files in each published layout, written here.

The published layout, as the reference code (paulgavrikov/onnxzoo2filterdb and CNN-Filter-DB) writes
and reads it: ``/filters`` (N, 3, 3) float64 (some copies float32); ``/meta`` = ``DataFrame.to_hdf``
indexed by [model_id, conv_depth, conv_depth_norm, layer_id] with ``filter_ids`` "start:end" (end
inclusive), or, in the oldest files, the same frame as CSV text stored as bytes.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.cnnfilterdb import FormatError, export_file, import_file, plan_import, read_source
from filtershift.cnnfilterdb.hdf5 import PROGRESS_FILE
from filtershift.cnnfilterdb.mapping import check_ranges, normalize_task
from filtershift.extraction.depth import depth_decile

SYNC = {"scheduler": "synchronous"}

# Three models, six 3x3 layers, 140 filters; rows are in model then layer order.
# (model_id, conv_depth, n_conv, layer_id, in, out): conv_depth_norm = conv_depth / (n_conv - 1)
LAYERS = [
    (0, 0, 5, 0, 3, 4),    # 12 filters, depth 0
    (0, 2, 5, 1, 4, 8),    # 32, depth 0.5
    (0, 4, 5, 2, 8, 2),    # 16, depth 1.0
    (3, 1, 11, 0, 5, 6),   # 30, depth 0.1 -> decile 0 (the boundary belongs to the lower decile)
    (3, 10, 11, 1, 6, 5),  # 30, depth 1.0 -> decile 9
    (7, 0, 2, 0, 2, 10),   # 20, a model whose 3x3 layers all sit at level 0
]
MODELS = {
    0: dict(model="resnet_tiny_imagenet_9", Name="resnet_tiny", Task="Classification", VC="natural",
            TD="ImageNet1k", Net="ResNet", Backbone=np.nan, depth=40, Paper="https://example.org/a"),
    3: dict(model="unet_ct_11", Name="unet", Task="Semantic Segmentation", VC="medical ct",
            TD="LiTS", Net=np.nan, Backbone="VGG11", depth=77, Paper=np.nan),
    7: dict(model="srgan_div2k", Name="srgan", Task="Super Resolution", VC="natural",
            TD="DIV2K", Net="SRGAN", Backbone=np.nan, depth=12, Paper=np.nan),
}


def reference_tables(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Filters (N, 3, 3) float64 and the /meta frame of the three models above."""
    rng = np.random.default_rng(seed)
    rows, start = [], 0
    for mid, conv, n_conv, lid, cin, cout in LAYERS:
        n = cin * cout
        m = MODELS[mid]
        rows.append({
            "model_id": mid, "conv_depth": conv, "conv_depth_norm": conv / (n_conv - 1), "layer_id": lid,
            "filter_ids": f"{start}:{start + n - 1}", "model": m["model"], "path": f"/zoo/{m['model']}.onnx",
            "producer": "pytorch 1.8", "op_set": 9, "Conv": 7, "Relu": 5, "(3, 3) filters": 999, "(1, 1) filters": 3,
            "total_filters": 1002, "3x3_filter_share": 999 / 1002, "Name": m["Name"], "Paper": m["Paper"],
            "Task": m["Task"], "Visual Category": m["VC"], "Training-Dataset": m["TD"], "Pretraining-Dataset": np.nan,
            "Network": m["Net"], "Backbone": m["Backbone"], "Precision": "fp32", "depth": m["depth"],
            "in_channels": cin, "out_channels": cout, "layer_depth": 3 * conv + 1,
        })
        start += n
    filters = rng.normal(size=(start, 3, 3)) * np.float64(1e-3) ** rng.uniform(0, 1, size=(start, 1, 1))
    filters[5] = 0.0
    meta = pd.DataFrame(rows).set_index(["model_id", "conv_depth", "conv_depth_norm", "layer_id"]).sort_index()
    for col in meta.columns:  # the reference's pandas stored text as object columns
        if pd.api.types.is_string_dtype(meta[col].dtype):
            meta[col] = meta[col].astype(object)
    return filters, meta


def write_reference(path, filters: np.ndarray, meta: pd.DataFrame, layout: str = "dataframe", dtype=np.float64) -> None:
    """A file in the published layout: /filters, and /meta via to_hdf or as CSV bytes."""
    with h5py.File(path, "w") as f:
        f["filters"] = filters if dtype is None else filters.astype(dtype)
        if layout == "csv":
            f["meta"] = np.frombuffer(meta.to_csv().encode("utf-8"), dtype=np.uint8)
    if layout == "dataframe":
        with warnings.catch_warnings():
            # PyTables pickles object (text) columns and says so; the published files were written alike.
            warnings.filterwarnings("ignore", message=r"\s*your performance may suffer as PyTables will pickle")
            meta.to_hdf(path, key="meta", mode="a")


def read_like_reference(path) -> tuple[np.ndarray, pd.DataFrame]:
    """How the reference notebook reads a file (its DataFrame variant)."""
    with h5py.File(path, "r") as f:
        filters = f["filters"][...]
    return filters, pd.read_hdf(path, "meta")


# ---------------------------------------------------------------- import, each published layout


@pytest.mark.parametrize("layout", ["dataframe", "csv"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunk_rows", [1000, 64, 37])  # 1, 3 and 5 store chunks
def test_import_holds_exactly_the_file(tmp_path, layout, dtype, chunk_rows):
    filters, meta = reference_tables()
    src = tmp_path / "dataset.h5"
    write_reference(src, filters, meta, layout, dtype)
    result = import_file(src, tmp_path / "db", chunk_rows=chunk_rows, batch_chunks=2, **SYNC)
    assert (result.n_rows, result.n_layers, result.n_models, result.skipped) == (140, 6, 3, False)
    db = store.open_database(tmp_path / "db")
    np.testing.assert_array_equal(db.filters().compute(), filters.astype(dtype).astype(np.float32).reshape(-1, 9))
    assert db.filters().dtype == np.float32

    layers = db.layers
    assert list(layers.columns[: len(store.LAYER_COLUMNS)]) == store.LAYER_COLUMNS
    assert {c: str(layers[c].dtype) for c in store.LAYER_COLUMNS if c != "name"} == {
        c: d for c, d in store.LAYER_DTYPES.items()}
    sizes = [cin * cout for *_, cin, cout in LAYERS]
    np.testing.assert_array_equal(layers["start"], np.cumsum([0] + sizes[:-1]))
    np.testing.assert_array_equal(layers["stop"], np.cumsum(sizes))
    np.testing.assert_array_equal(layers["layer_id"], np.arange(6))
    np.testing.assert_array_equal(layers["model_id"], [m for m, *_ in LAYERS])
    np.testing.assert_array_equal(layers["conv_index"], [c for _, c, *_ in LAYERS])
    np.testing.assert_array_equal(layers["n_conv"], [5, 5, 5, 11, 11, 1])
    np.testing.assert_array_equal(layers["depth"], [c / (n - 1) for _, c, n, *_ in LAYERS])
    np.testing.assert_array_equal(layers["depth_decile"], [depth_decile(c, n) for _, c, n, *_ in LAYERS])
    np.testing.assert_array_equal(layers["depth_decile"], [0, 4, 9, 0, 9, 0])
    np.testing.assert_array_equal(layers["in_channels"], [r[4] for r in LAYERS])
    np.testing.assert_array_equal(layers["out_channels"], [r[5] for r in LAYERS])
    np.testing.assert_array_equal(layers["groups"], 1)
    np.testing.assert_array_equal(layers["layer_index"], [r[3] for r in LAYERS])
    np.testing.assert_array_equal(layers["layer_depth"], [3 * r[1] + 1 for r in LAYERS])
    np.testing.assert_array_equal(db.layer_ids().compute(), np.repeat(np.arange(6), sizes))

    models = db.models
    assert list(models.columns[: len(store.MODEL_COLUMNS)]) == store.MODEL_COLUMNS
    assert list(models["model_id"]) == [0, 3, 7]
    assert list(models["name"]) == [MODELS[i]["model"] for i in (0, 3, 7)]
    assert list(models["task"]) == ["Classification", "Segmentation", "Super Resolution"]
    assert list(models["data_type"]) == ["natural", "medical ct", "natural"]
    assert list(models["dataset"]) == ["ImageNet1k", "LiTS", "DIV2K"]
    assert list(models["family"]) == ["ResNet", "VGG11", "SRGAN"]  # Network, else Backbone
    assert list(models["format"]) == ["cnn-filter-db"] * 3 and list(models["status"]) == ["ok"] * 3
    assert list(models["n_layers"]) == [3, 2, 1] and list(models["n_filters"]) == [60, 60, 20]
    assert list(models["path"]) == [f"/zoo/{MODELS[i]['model']}.onnx" for i in (0, 3, 7)]
    # every other column is kept; the model's graph `depth` is renamed away from the layers' `depth`
    assert list(models["cnnfilterdb:depth"]) == [40, 77, 12]
    assert list(models["Name"]) == ["resnet_tiny", "unet", "srgan"]
    assert list(models["(3, 3) filters"]) == [999] * 3 and list(models["op_set"]) == [9] * 3
    assert models["Paper"].isna().tolist() == [False, True, True]
    assert list(models["Backbone"].fillna("-")) == ["-", "VGG11", "-"]
    for col in ("producer", "Precision", "Pretraining-Dataset", "3x3_filter_share", "total_filters", "Conv"):
        assert col in models.columns
    for gone in ("Task", "Visual Category", "Training-Dataset", "Network", "model", "filter_ids"):
        assert gone not in models.columns and gone not in layers.columns


def test_import_older_files_datatype_and_shuffled_meta(tmp_path):
    filters, meta = reference_tables()
    meta = meta.rename(columns={"Visual Category": "Datatype"}).sample(frac=1.0, random_state=3)
    write_reference(tmp_path / "old.h5", filters, meta, "csv")
    import_file(tmp_path / "old.h5", tmp_path / "db", **SYNC)
    db = store.open_database(tmp_path / "db")
    assert list(db.models["data_type"]) == ["natural", "medical ct", "natural"]
    np.testing.assert_array_equal(db.layers["start"], np.sort(db.layers["start"]))
    np.testing.assert_array_equal(db.filters().compute(), filters.astype(np.float32).reshape(-1, 9))


def test_exported_file_reads_like_the_reference(tmp_path):
    filters, meta = reference_tables()
    write_reference(tmp_path / "in.h5", filters, meta)
    import_file(tmp_path / "in.h5", tmp_path / "db", chunk_rows=64, **SYNC)
    for float64 in (False, True):
        out = export_file(tmp_path / "db", tmp_path / f"out{float64}.h5", float64=float64, batch_chunks=1, **SYNC)
        got, got_meta = read_like_reference(out)
        assert got.shape == (140, 3, 3) and got.dtype == (np.float64 if float64 else np.float32)
        assert list(got_meta.index.names) == ["model_id", "conv_depth", "conv_depth_norm", "layer_id"]
        for key, row in got_meta.iterrows():  # the reference's own indexing: f["filters"][start:end + 1]
            a, b = map(int, row["filter_ids"].split(":"))
            orig = meta.loc[key, "filter_ids"]
            oa, ob = map(int, orig.split(":"))
            np.testing.assert_array_equal(got[a:b + 1], filters[oa:ob + 1].astype(np.float32))
        # every published column comes back with its values (Task spellings normalised)
        shared = [c for c in meta.columns if c not in ("Task", "Network")]
        back = got_meta.loc[meta.index, shared]
        pd.testing.assert_frame_equal(back.astype(object).where(back.notna(), None),
                                      meta[shared].astype(object).where(meta[shared].notna(), None),
                                      check_dtype=False)
        assert list(got_meta.loc[meta.index, "Task"]) == list(normalize_task(meta["Task"]))


# ---------------------------------------------------------------- round trip export -> import


def assert_same_database(a_path, b_path):
    a, b = store.open_database(a_path), store.open_database(b_path)
    pd.testing.assert_frame_equal(a.models, b.models)
    pd.testing.assert_frame_equal(a.layers, b.layers)
    np.testing.assert_array_equal(a.filters().compute(), b.filters().compute())
    np.testing.assert_array_equal(a.layer_ids().compute(), b.layer_ids().compute())


def test_round_trip_of_an_imported_database_is_lossless(tmp_path):
    filters, meta = reference_tables()
    write_reference(tmp_path / "in.h5", filters, meta, "csv")
    import_file(tmp_path / "in.h5", tmp_path / "db1", **SYNC)
    export_file(tmp_path / "db1", tmp_path / "out.h5", **SYNC)
    import_file(tmp_path / "out.h5", tmp_path / "db2", chunk_rows=37, **SYNC)
    assert_same_database(tmp_path / "db1", tmp_path / "db2")


def native_database(path, n_rows: int = 200):
    """A database as `filtershift extract` writes one: two models with layers, one failed model."""
    rng = np.random.default_rng(1)
    filters = rng.normal(size=(n_rows, 9)).astype(np.float32)
    layers = pd.DataFrame({
        "layer_id": [0, 1, 2, 3], "model_id": [10, 10, 10, 11], "name": ["features.0", "features.3", "layer1.conv", "body.0"],
        "conv_index": [0, 3, 5, 0], "n_conv": [6, 6, 6, 1], "depth": [0.0, 0.6, 1.0, 0.0], "depth_decile": [0, 5, 9, 0],
        "in_channels": [3, 4, 1, 5], "out_channels": [10, 10, 16, 10], "groups": [1, 1, 16, 1],
        "start": [0, 30, 70, 86], "stop": [30, 70, 86, 200], "n_filters": [30, 40, 16, 114],
    }).astype(store.LAYER_DTYPES)
    layers.loc[3, "stop"] = n_rows
    layers["kernel_counts"] = ["{}", "{}", "{}", '{"(1, 1)": 4}']  # an extra layer column
    models = pd.DataFrame({
        "model_id": [10, 11, 12], "name": ["vgg_a", "edsr_b", "broken_c"], "path": ["a.pt", "b.onnx", "c.pt"],
        "format": ["torch", "onnx", "torch"], "sha256": ["aa", "bb", None], "task": ["Classification", "Super Resolution", None],
        "data_type": ["natural", "natural", "seismic"], "dataset": ["CIFAR-10", "DIV2K", None], "family": ["VGG", "EDSR", None],
        "n_layers": [3, 1, 0], "n_filters": [86, 114, 0], "status": ["ok", "ok", "failed"], "error": [None, None, "corrupt zip"],
        "Task": ["extra column spelled like a reference one", "x", "y"], "epochs": [90, 300, 1],
    })
    store.write_database(path, filters, models, layers, chunk_rows=64)


def test_round_trip_of_a_native_database_is_lossless(tmp_path):
    native_database(tmp_path / "db1")
    export_file(tmp_path / "db1", tmp_path / "out.h5", **SYNC)
    got, meta = read_like_reference(tmp_path / "out.h5")
    assert got.shape == (200, 3, 3) and list(meta["model"].unique()) == ["vgg_a", "edsr_b"]
    assert list(meta["Task"].unique()) == ["Classification", "Super Resolution"]
    import_file(tmp_path / "out.h5", tmp_path / "db2", chunk_rows=64, **SYNC)
    assert_same_database(tmp_path / "db1", tmp_path / "db2")


# ---------------------------------------------------------------- resumable, idempotent


def test_interrupted_import_resumes_and_finished_import_is_not_redone(tmp_path):
    filters, meta = reference_tables()
    write_reference(tmp_path / "in.h5", filters, meta)
    db = tmp_path / "db"

    def stop_after_first_batch(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_file(tmp_path / "in.h5", db, chunk_rows=16, batch_chunks=2, progress=stop_after_first_batch, **SYNC)
    assert not (db / store.MODELS_TABLE).exists() and not (db / store.LAYERS_TABLE).exists()
    with pytest.raises(store.DatabaseError, match="not a filter database"):
        store.open_database(db)
    result = import_file(tmp_path / "in.h5", db, **SYNC)
    assert result.resumed_from == 32 and not result.skipped
    np.testing.assert_array_equal(store.open_database(db).filters().compute(), filters.astype(np.float32).reshape(-1, 9))
    mtime = (db / store.LAYERS_TABLE).stat().st_mtime_ns
    again = import_file(tmp_path / "in.h5", db, **SYNC)
    assert again.skipped and (db / store.LAYERS_TABLE).stat().st_mtime_ns == mtime

    other_filters, other_meta = reference_tables(seed=5)
    write_reference(tmp_path / "other.h5", other_filters[:, ::-1], other_meta)
    with pytest.raises(store.DatabaseError, match="holds an import of"):
        import_file(tmp_path / "other.h5", db, **SYNC)


# ---------------------------------------------------------------- validation


def broken(tmp_path, edit, layout="dataframe", filters=None):
    f0, meta = reference_tables()
    meta = edit(meta.copy())
    path = tmp_path / "bad.h5"
    write_reference(path, f0 if filters is None else filters, meta, layout, dtype=np.float64 if filters is None else None)
    return path


def set_ids(meta, i, value):
    meta.iloc[i, meta.columns.get_loc("filter_ids")] = value
    return meta


@pytest.mark.parametrize("edit, message", [
    (lambda m: set_ids(m, 1, "10:43"), r"overlap: each /filters row must belong to exactly one layer"),
    (lambda m: set_ids(m, 1, "12:45"), r"overlap"),
    (lambda m: set_ids(m, 1, "12:40"), r"rows 41\.\.43 belong to no layer \(gap between"),
    (lambda m: set_ids(m, 0, "1:11"), r"rows 0\.\.0 belong to no layer"),
    (lambda m: set_ids(m, 5, "120:140"), r"has filter_ids 120:140 but /filters has only 140 rows"),
    (lambda m: set_ids(m, 5, "120:138"), r"rows 139\.\.139 belong to no layer"),
    (lambda m: set_ids(m, 2, "44-59"), r"expected \"start:end\""),
    (lambda m: set_ids(m, 2, "59:44"), r"end < start"),
    (lambda m: m.drop(columns=["filter_ids"]), r"lacks the column\(s\) \['filter_ids'\]"),
    (lambda m: m.drop(columns=["model"]), r"lacks the column\(s\) \['model'\]"),
    (lambda m: m.reset_index("conv_depth_norm", drop=True), r"lacks the column\(s\) \['conv_depth_norm'\]"),
    (lambda m: m.assign(Precision=["fp32", 16, "fp32", "fp32", "fp32", "fp32"]), r"column 'Precision' mixes value types"),
])
def test_bad_files_fail_before_anything_is_written(tmp_path, edit, message):
    path = broken(tmp_path, edit)
    with pytest.raises(FormatError, match=message) as info:
        import_file(path, tmp_path / "db", **SYNC)
    assert str(path) in str(info.value)
    assert not (tmp_path / "db").exists()


def test_mixed_column_can_be_coerced_to_text(tmp_path):
    path = broken(tmp_path, lambda m: m.assign(Precision=["fp32", "fp32", "fp32", 16, 16, "fp32"]))
    import_file(path, tmp_path / "db", coerce_mixed=True, **SYNC)
    assert list(store.open_database(tmp_path / "db").models["Precision"]) == ["fp32", "16", "fp32"]


def test_filters_must_be_float_3x3(tmp_path):
    f0, meta = reference_tables()
    with pytest.raises(FormatError, match="expected float64 or float32"):
        import_file(broken(tmp_path, lambda m: m, filters=(f0 * 100).astype(np.int32)), tmp_path / "db", **SYNC)
    with pytest.raises(FormatError, match=r"expected \(N, 3, 3\) or \(N, 9\)"):
        import_file(broken(tmp_path, lambda m: m, filters=f0.reshape(-1, 3)), tmp_path / "db", **SYNC)
    with h5py.File(tmp_path / "nometa.h5", "w") as f:
        f["filters"] = f0
    with pytest.raises(FormatError, match="no /meta"):
        read_source(tmp_path / "nometa.h5")
    assert not (tmp_path / "db").exists()


def test_import_refuses_an_existing_database(tmp_path):
    native_database(tmp_path / "db")
    filters, meta = reference_tables()
    write_reference(tmp_path / "in.h5", filters, meta)
    with pytest.raises(store.DatabaseError, match="already holds a filter database"):
        import_file(tmp_path / "in.h5", tmp_path / "db", **SYNC)
    assert not (tmp_path / "db" / PROGRESS_FILE).exists()


# ---------------------------------------------------------------- pure pieces


def test_check_ranges_returns_start_order_and_accepts_a_tiling():
    order = check_ranges(np.array([5, 0, 9]), np.array([9, 5, 12]), 12, ["a", "b", "c"], "f.h5")
    np.testing.assert_array_equal(order, [1, 0, 2])


def test_normalize_task():
    got = normalize_task(pd.Series(["Semantic Segmentation", "Instance segmentation", "Classification", None], dtype=object))
    assert got.tolist()[:3] == ["Segmentation", "Segmentation", "Classification"] and pd.isna(got.iloc[3])


def test_plan_import_is_pure_and_derives_n_conv():
    _, meta = reference_tables()
    plan = plan_import(meta, 140, "mem")
    assert plan.layers["n_conv"].tolist() == [5, 5, 5, 11, 11, 1]
    assert plan.notes == ()
    no_meta = plan_import(meta.drop(columns=["Training-Dataset"]), 140, "mem")
    assert no_meta.models["dataset"].isna().all() and "Training-Dataset" in no_meta.notes[0]


# ---------------------------------------------------------------- the command line


def test_cli_import_and_export(tmp_path, capsys):
    from filtershift.cli import main

    filters, meta = reference_tables()
    write_reference(tmp_path / "in.h5", filters, meta)
    bad = broken(tmp_path, lambda m: set_ids(m, 1, "10:43"))
    assert main(["import-cnnfilterdb", str(bad), "--db", str(tmp_path / "bad")]) == 2  # fails before a cluster starts
    assert "overlap" in capsys.readouterr().err
    cluster = ["--workers", "1", "--threads-per-worker", "2", "--dashboard-address", ":0"]
    assert main(["import-cnnfilterdb", str(tmp_path / "in.h5"), "--db", str(tmp_path / "db"), "--chunk-rows", "64", *cluster]) == 0
    assert main(["import-cnnfilterdb", str(tmp_path / "in.h5"), "--db", str(tmp_path / "db"), "--threads"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["export-cnnfilterdb", str(tmp_path / "db"), str(tmp_path / "out.h5"), "--float64", "--threads"]) == 0
    got, got_meta = read_like_reference(tmp_path / "out.h5")
    assert got.dtype == np.float64 and len(got_meta) == 6
    np.testing.assert_array_equal(got.astype(np.float32), filters.astype(np.float32))


# ---------------------------------------------------------------- analyze: imported == native


def strip_to_published(src, dst):
    """The export of ``src`` as a published file would be: no filtershift column map, no
    ``filtershift:*`` columns, /meta in the reference's own column names only."""
    filters, meta = read_like_reference(src)
    meta = meta[[c for c in meta.columns if not c.startswith("filtershift:")]]
    write_reference(dst, filters, meta, "dataframe", dtype=None)


def test_analyze_on_import_equals_analyze_on_native_extraction(tmp_path, tests_arch):
    from filtershift.analysis.plan import make_plan
    from filtershift.analysis.compute import analyze
    from filtershift.extraction.extract import plan_extraction, run_extraction
    from filtershift.extraction.manifest import read_manifest

    from tests.nets import make_model, save_all_formats

    rows = []
    for seed, (task, data_type) in enumerate([("classification", "natural"), ("Semantic Segmentation", "medical"), ("classification", "medical")]):
        path = save_all_formats(make_model(seed), tmp_path / "zoo", f"m{seed}")["state_dict"]
        rows.append({"path": path.name, "name": f"m{seed}", "task": task, "data_type": data_type, "dataset": "synthetic",
                     "family": "mixed", "arch": "tests:mixed"})
    pd.DataFrame(rows).to_csv(tmp_path / "zoo" / "manifest.csv", index=False)
    run_extraction(plan_extraction(read_manifest(tmp_path / "zoo" / "manifest.csv"), tmp_path / "native"), chunk_rows=64, show_progress=False)
    export_file(tmp_path / "native", tmp_path / "export.h5", float64=True, **SYNC)
    strip_to_published(tmp_path / "export.h5", tmp_path / "published.h5")
    import_file(tmp_path / "published.h5", tmp_path / "imported", chunk_rows=64, **SYNC)

    native, imported = store.open_database(tmp_path / "native"), store.open_database(tmp_path / "imported")
    # the published mapping reproduces the native depth deciles and (normalised) tasks
    np.testing.assert_array_equal(imported.layers["depth_decile"], native.layers.sort_values("start")["depth_decile"])
    assert sorted(imported.models["task"]) == ["Segmentation", "classification", "classification"]
    native.models["task"] = normalize_task(native.models["task"]).astype("str")  # the reference's spelling rule
    by = ["task", "data_type", "depth_decile"]
    out = {}
    import dask

    with dask.config.set(scheduler="synchronous"):
        for label, db in (("native", native), ("imported", imported)):
            plan = make_plan(db.models, db.layers, db.chunk_rows, by=by)
            out[label] = analyze(db, plan, "cmp", log=False)
    a, b = out["native"], out["imported"]
    for attr in ("mean", "components", "explained_variance_ratio"):
        np.testing.assert_allclose(getattr(b.pca, attr), getattr(a.pca, attr), rtol=1e-6, atol=1e-9)
    for key in by:
        pd.testing.assert_frame_equal(b.shift(key), a.shift(key), check_exact=False, rtol=1e-6, atol=1e-9)
