"""verify passes after every successful run over random manifests, and fails after each kind of
deliberate corruption."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from hypothesis import HealthCheck, given, settings, strategies as st

from filtershift import store
from filtershift.store import rows_checksum
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.store.verify import verify

from tests.nets import make_model, save_all_formats


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("pool")
    rows = []
    for seed in range(3):
        for kind, path in save_all_formats(make_model(seed), folder, f"m{seed}").items():
            if kind != "safetensors":
                rows.append({"path": str(path), "name": f"m{seed}-{kind}", "task": ["cls", "seg"][seed % 2], "data_type": "natural"})
    return rows


def corruptions(db: Path) -> dict:
    """name -> function that damages a copy of the database in one way."""

    def flip_filter(d):
        arr = zarr.open_group(str(d / store.FILTERS_STORE), mode="r+")["filters"]
        arr[3, 4] = arr[3, 4] + 1.0

    def wrong_layer_id(d):
        arr = zarr.open_group(str(d / store.FILTERS_STORE), mode="r+")["layer"]
        arr[5] = arr[5] + 1

    def gap_in_ranges(d):
        layers = pd.read_parquet(d / store.LAYERS_TABLE)
        layers.loc[1, "start"] += 1
        layers.loc[1, "n_filters"] -= 1
        store.write_table(layers, d / store.LAYERS_TABLE)

    def count_disagrees(d):
        models = pd.read_parquet(d / store.MODELS_TABLE)
        models.loc[models["status"] == "ok", "n_filters"] += 1
        store.write_table(models, d / store.MODELS_TABLE)

    def truncated_array(d):
        group = zarr.open_group(str(d / store.FILTERS_STORE), mode="r+")
        n = group["filters"].shape[0]
        group["filters"].resize((n - 2, 9))

    def duplicate_name(d):  # a failed row beside the ok row of the same name
        models = pd.read_parquet(d / store.MODELS_TABLE)
        extra = models.iloc[[0]].assign(model_id=models["model_id"].max() + 1, status="failed", error="file not found")
        store.write_table(pd.concat([models, extra], ignore_index=True), d / store.MODELS_TABLE)

    def stale_rows(d):  # layers of a model the models table no longer holds
        models = pd.read_parquet(d / store.MODELS_TABLE)
        store.write_table(models[models["model_id"] != models.loc[models["status"] == "ok", "model_id"].iloc[0]], d / store.MODELS_TABLE)

    return {f.__name__: f for f in (flip_filter, wrong_layer_id, gap_in_ranges, count_disagrees, truncated_array, duplicate_name, stale_rows)}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_verify_passes_after_runs_and_catches_every_corruption(pool, tmp_path_factory, data):
    work = tmp_path_factory.mktemp("verify")
    chosen = data.draw(st.lists(st.sampled_from(range(len(pool))), min_size=1, max_size=len(pool), unique=True))
    split = data.draw(st.integers(1, len(chosen)))
    chunk_rows = data.draw(st.sampled_from([16, 50, 256]))
    db = work / "db"
    for part in (chosen[:split], chosen):  # a first run, then an append
        manifest = work / "manifest.csv"
        pd.DataFrame([pool[i] for i in part]).to_csv(manifest, index=False)
        run_extraction(plan_extraction(read_manifest(manifest), db), chunk_rows=chunk_rows, show_progress=False)
        assert verify(db) == []
    for name, damage in corruptions(db).items():
        copy = work / f"db-{name}"
        shutil.copytree(db, copy)
        damage(copy)
        assert verify(copy), f"verify missed: {name}"


def test_stale_results_are_reported(pool, tmp_path):
    from filtershift.analysis.results import stale_analyses
    from filtershift.store.fingerprint import fingerprint

    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(pool[:2]).to_csv(manifest, index=False)
    db = tmp_path / "db"
    run_extraction(plan_extraction(read_manifest(manifest), db), show_progress=False)
    results = db / store.RESULTS_DIR / "demo"
    results.mkdir(parents=True)
    (results / "provenance.json").write_text('{"database": {"fingerprint": "%s"}}' % fingerprint(store.open_database(db)))
    assert verify(db) + stale_analyses(db) == []
    pd.DataFrame(pool[:3]).to_csv(manifest, index=False)
    run_extraction(plan_extraction(read_manifest(manifest), db), show_progress=False)
    (problem,) = verify(db) + stale_analyses(db)
    assert "results 'demo'" in problem and "rerun `filtershift analyze" in problem


def test_duplicate_names_and_stale_rows_are_named(pool, tmp_path):
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(pool[:3]).to_csv(manifest, index=False)
    db = tmp_path / "db"
    run_extraction(plan_extraction(read_manifest(manifest), db), chunk_rows=50, show_progress=False)
    damage = corruptions(db)
    for name, expected in (("duplicate_name", "more than one live row (m0-"), ("stale_rows", "stale rows: 3 layer(s), 48 filter rows")):
        copy = tmp_path / name
        shutil.copytree(db, copy)
        damage[name](copy)
        assert any(expected in p for p in verify(copy)), (name, verify(copy))


@pytest.mark.parametrize("kind", ["empty folder", "no such folder", "store without tables"])
def test_verify_of_a_non_database_answers_like_every_command(tmp_path, capsys, kind):
    from filtershift.cli import main

    folder = tmp_path / "not-a-db"
    if kind != "no such folder":
        folder.mkdir()
    if kind == "store without tables":
        store.ensure_store(folder)
    assert main(["verify", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder} is not a filter database") and f"filtershift extract MANIFEST --db {folder}" in err


def test_row_checksum_is_the_sha256_of_the_float32_bytes():
    """``rows_sha256`` of databases written by any version: SHA-256 of the rows as contiguous
    float32 bytes, whatever the layout or dtype handed in (hashed in place now, not copied)."""
    x = np.random.default_rng(0).standard_normal((1001, 9)).astype(np.float32)
    for rows, as_stored in ((x, x), (x[::3], np.ascontiguousarray(x[::3])), (x.astype(np.float64), x), (x[:0], x[:0])):
        assert rows_checksum(rows) == hashlib.sha256(as_stored.tobytes()).hexdigest()
