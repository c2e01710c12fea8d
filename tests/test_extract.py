"""extract: the database holds exactly the expected kernels; reruns, appends and failures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.cli import main
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import ManifestError, read_manifest
from filtershift.store.verify import verify

from tests.nets import MIXED_LAYERS, MIXED_N_CONV, expected_kernels, make_model, save_all_formats

CHUNK = 64  # small chunks, so that a few tiny models span several of them


def write_manifest(folder: Path, rows: list[dict], name: str = "manifest.csv") -> Path:
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def extract(manifest: Path, db: Path):
    return run_extraction(plan_extraction(read_manifest(manifest), db), chunk_rows=CHUNK, show_progress=False)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Three models in every format; returns the folder, manifest rows and expected kernels."""
    folder = tmp_path_factory.mktemp("zoo")
    rows, expected = [], {}
    for seed in range(3):
        model = make_model(seed)
        expected[seed] = expected_kernels(model)
        for kind, path in save_all_formats(model, folder, f"m{seed}").items():
            rows.append({"path": path.name, "name": f"m{seed}-{kind}", "task": "classification", "data_type": ["natural", "medical", "natural"][seed],
                         "dataset": "synthetic", "family": "mixed", "seed": str(seed), "arch": "" if kind in ("torchscript", "onnx") else "tests:mixed"})
    return folder, rows, expected



def test_database_holds_exactly_the_expected_kernels(zoo, tmp_path, tests_arch):
    folder, rows, expected = zoo
    report = extract(write_manifest(folder, rows), tmp_path / "db")
    assert report.n_failed == 0 and report.n_new_models == len(rows)
    db = store.open_database(tmp_path / "db")
    filters, layer_ids = db.filters().compute(), db.layer_ids().compute()
    assert filters.dtype == np.float32 and layer_ids.dtype == np.int32
    layers, models = db.layers, db.models
    assert list(layers.columns) == store.LAYER_COLUMNS
    assert set(store.MODEL_COLUMNS) <= set(models.columns) and "seed" in models.columns
    assert (layers["start"].to_numpy()[1:] == layers["stop"].to_numpy()[:-1]).all() and layers["stop"].iloc[-1] == len(filters) == db.n_rows
    for model in models.itertuples():
        seed = int(model.seed)
        mine = layers[layers["model_id"] == model.model_id]
        assert list(mine["name"].str.strip("/").str.removesuffix("/Conv")) == [n for n, *_ in MIXED_LAYERS]
        assert (mine["n_conv"] == MIXED_N_CONV).all()
        for layer, (name, conv_index, groups, in_pg, out) in zip(mine.itertuples(), MIXED_LAYERS):
            assert (layer.conv_index, layer.groups, layer.in_channels, layer.out_channels) == (conv_index, groups, in_pg, out)
            assert layer.depth == conv_index / (MIXED_N_CONV - 1)
            assert layer.depth_decile == max(int(np.ceil(10 * conv_index / (MIXED_N_CONV - 1))) - 1, 0)
            np.testing.assert_array_equal(filters[layer.start:layer.stop], expected[seed][name])
            assert (layer_ids[layer.start:layer.stop] == layer.layer_id).all()
        assert model.n_filters == mine["n_filters"].sum() and model.status == "ok"
        assert model.sha256 == hashlib.sha256((folder / Path(model.path).name).read_bytes()).hexdigest()


def test_rerun_does_no_work_and_append_keeps_existing_chunks(zoo, tmp_path, tests_arch):
    folder, rows, expected = zoo
    db = tmp_path / "db"
    extract(write_manifest(folder, rows[:7], "first.csv"), db)
    before = store.open_database(db)
    full_chunks = before.n_rows // CHUNK
    chunk_dir = db / store.FILTERS_STORE / "filters" / "c"
    old = {p: p.read_bytes() for p in sorted(chunk_dir.rglob("*")) if p.is_file() and int(p.parent.name) < full_chunks}
    assert len(old) >= 3

    plan = plan_extraction(read_manifest(write_manifest(folder, rows[:7], "first.csv")), db)
    assert plan.to_stage == () and len(plan.up_to_date) == 7  # a rerun does no work

    leftover = db / store.FILTERS_STORE / "filters" / "zarr.0123abcd.partial"  # as a killed resize leaves it
    leftover.write_text("{")
    extract(write_manifest(folder, rows, "all.csv"), db)
    after = store.open_database(db)
    assert not leftover.exists()  # zarr's temporary files of a killed writer go with the next append
    assert {p: p.read_bytes() for p in old} == old  # every complete chunk byte-identical
    assert after.n_rows > before.n_rows
    np.testing.assert_array_equal(after.filters().compute()[: before.n_rows], before.filters().compute())
    pd.testing.assert_frame_equal(after.layers.iloc[: len(before.layers)], before.layers)
    assert list(after.models["model_id"]) == list(range(len(rows)))


def test_broken_checkpoints_fail_alone(zoo, tmp_path, tests_arch):
    folder, rows, _ = zoo
    (tmp_path / "garbage.pt").write_bytes(b"not a pickle at all")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01 not protobuf")
    good = [{**r, "path": str((folder / r["path"]).resolve())} for r in rows[:2]]
    manifest = write_manifest(tmp_path, good + [{"path": "garbage.pt"}, {"path": "garbage.onnx"}, {"path": "nowhere.pt"}])
    report = extract(manifest, tmp_path / "db")
    status = dict(zip(report.statuses["path"].map(lambda p: Path(p).name), report.statuses["status"]))
    assert status == {"m0.pt": "ok", "m0.ckpt.pt": "ok", "garbage.pt": "failed", "garbage.onnx": "failed", "nowhere.pt": "failed"}
    models = store.open_database(tmp_path / "db").models.set_index("name")
    assert "file not found" in models.at["nowhere", "error"]
    assert models.at["garbage", "error"] and models.loc[["m0-state_dict", "m0-checkpoint"], "n_filters"].gt(0).all()


def test_manifest_errors_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "no_path.csv").write_text("name,task\na,b\n")
    with pytest.raises(ManifestError, match="no 'path' column"):
        read_manifest(tmp_path / "no_path.csv")
    (tmp_path / "latin1.csv").write_bytes("path,name\nm.pt,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="save the manifest as UTF-8"):
        read_manifest(tmp_path / "latin1.csv")
    (tmp_path / "dup.csv").write_text("path,name\na.pt,x\nb.pt,x\n")
    with pytest.raises(ManifestError, match="repeats the name"):
        read_manifest(tmp_path / "dup.csv")


def test_cli_one_and_two_workers_build_identical_databases(zoo, tmp_path, capsys):
    folder, rows, _ = zoo
    # graph formats only: the tests' arch prefix is not registered inside worker processes
    graph_rows = [r for r in rows if r["arch"] == ""]
    manifest = write_manifest(folder, graph_rows, "graphs.csv")
    for workers in (1, 2):
        code = main(["extract", str(manifest), "--db", str(tmp_path / f"db{workers}"), "--workers", str(workers),
                     "--chunk-rows", str(CHUNK), "--no-progress", "--dashboard-address", ":0"])
        assert code == 0
    assert "dask dashboard: http" in capsys.readouterr().err
    one, two = (tmp_path / "db1" / store.FILTERS_STORE, tmp_path / "db2" / store.FILTERS_STORE)
    files_one = {p.relative_to(one): p.read_bytes() for p in one.rglob("*") if p.is_file()}
    files_two = {p.relative_to(two): p.read_bytes() for p in two.rglob("*") if p.is_file()}
    assert files_one == files_two and len(files_one) > 4
    for table in (store.LAYERS_TABLE, store.MODELS_TABLE):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "db1" / table), pd.read_parquet(tmp_path / "db2" / table))
    assert main(["extract", str(manifest), "--db", str(tmp_path / "db1"), "--no-progress"]) == 0
    assert "is up to date" in capsys.readouterr().err


def test_each_checkpoint_is_read_once_and_only_shared_chunks_are_staged(zoo, tmp_path, monkeypatch, tests_arch):
    """Every checkpoint is parsed once; the staging folder never holds more than the rows of the
    chunks neighbours share (at most two partial chunks per checkpoint), whatever its size."""
    import filtershift.extraction.staging as staging

    folder, rows, _ = zoo
    parsed, staged_rows = [], []
    real_read, real_write = staging.read_convolutions, staging._write_atomically
    monkeypatch.setattr(staging, "read_convolutions", lambda path, *a: parsed.append(Path(path).name) or real_read(path, *a))

    def counting_write(target, edges, *rest):
        staged_rows.append(len(edges["head_filters"]) + len(edges["tail_filters"]))
        return real_write(target, edges, *rest)

    monkeypatch.setattr(staging, "_write_atomically", counting_write)
    chunk = 8  # smaller than a model (48 rows each)
    report = run_extraction(plan_extraction(read_manifest(write_manifest(folder, rows)), tmp_path / "db"), chunk_rows=chunk, show_progress=False)
    assert report.n_failed == 0 and report.n_new_models == len(rows)
    assert sorted(parsed) == sorted(r["path"] for r in rows)  # each once
    assert len(staged_rows) == report.n_new_models and all(n < 2 * chunk for n in staged_rows)
    assert sum(staged_rows) < report.n_new_filters / 3
    assert verify(tmp_path / "db") == []  # every model's rows in the store match its checksum
