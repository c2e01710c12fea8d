"""Reruns of extract match manifest rows to stored models by name (filtershift/extraction/rerun.py):
a fixed row replaces its failed or skipped row, a changed file is refused unless
``--replace-changed``, and ``remove`` drops models; ``verify`` checks one live row per name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from filtershift import store
from filtershift.cli import main
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.store.verify import verify

from tests.nets import export_onnx, make_model

CHUNK = 16  # each test model has 48 3x3 filters: three chunks apiece


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rerun-zoo")
    files = {}
    for seed in range(4):
        export_onnx(make_model(seed), folder / f"m{seed}.onnx")
        files[f"m{seed}"] = folder / f"m{seed}.onnx"
    return files


def write_manifest(folder: Path, rows: list[dict]) -> Path:
    path = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def extract(manifest: Path, db: Path, replace_changed: bool = False):
    plan = plan_extraction(read_manifest(manifest), db)
    return run_extraction(plan, chunk_rows=CHUNK, show_progress=False, replace_changed=replace_changed)


def info_text(db: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["info", str(db)]) == 0
    return capsys.readouterr().out


def test_fixed_rows_replace_their_failed_and_skipped_rows(onnx_files, tmp_path, capsys):
    db = tmp_path / "db"
    rows = [
        {"path": str(onnx_files["m0"]), "name": "m0"},
        {"path": str(onnx_files["m1"]).replace("m1.onnx", "m1-typo.onnx"), "name": "m1"},  # failed: no such file
        {"path": str(onnx_files["m0"]), "name": "m2"},  # skipped: the path of row 1 again
    ]
    first = extract(write_manifest(tmp_path, rows), db)
    assert dict(zip(first.statuses["name"], first.statuses["status"])) == {"m0": "ok", "m1": "failed", "m2": "skipped"}
    assert "1 failed, 1 skipped" in info_text(db, capsys)
    ids_before = dict(zip(*store.read_tables(db)[0][["name", "model_id"]].T.values))

    rows[1]["path"], rows[2]["path"] = str(onnx_files["m1"]), str(onnx_files["m2"])  # the manifest fixed
    second = extract(write_manifest(tmp_path, rows), db)
    assert second.n_failed == 0 and second.n_new_models == 2

    models, _ = store.read_tables(db)
    assert sorted(models["name"]) == ["m0", "m1", "m2"] and (models["status"] == "ok").all()  # one row per name
    assert dict(zip(models["name"], models["model_id"])) == ids_before  # the retried rows keep their ids
    text = info_text(db, capsys)
    assert "models: 3 ok\n" in text and "failed" not in text and "skipped" not in text
    assert verify(db) == []
    assert plan_extraction(read_manifest(tmp_path / "manifest.csv"), db).to_stage == ()  # nothing left to do
