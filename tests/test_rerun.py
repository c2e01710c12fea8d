"""Reruns of extract match manifest rows to stored models by name (filtershift/extraction/rerun.py):
a fixed row replaces its failed or skipped row, a changed file is refused unless
``--replace-changed``, and ``remove`` drops models; ``verify`` checks one live row per name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from filtershift import store
from filtershift.analysis.results import stale_analyses
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


def chunk_hashes(db: Path) -> dict[str, str]:
    """sha256 of every chunk file of both arrays, by path within the store."""
    root = db / store.FILTERS_STORE
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*/c/**/*")) if p.is_file()}


def chunks_of(db: Path, model_ids: set[int]) -> set[str]:
    """The chunk files holding only rows of ``model_ids`` (both arrays)."""
    models, layers = store.read_tables(db)
    mine = layers[layers["model_id"].isin(model_ids)]
    others = layers[~layers["model_id"].isin(model_ids)]
    chunks = {c for r in mine.itertuples() for c in range(r.start // CHUNK, (r.stop - 1) // CHUNK + 1)}
    chunks -= {c for r in others.itertuples() for c in range(r.start // CHUNK, (r.stop - 1) // CHUNK + 1)}
    return {f"filters/c/{c}/0" for c in chunks} | {f"layer/c/{c}" for c in chunks}


def test_a_changed_file_is_refused_then_replaces_the_old_version_with_the_flag(onnx_files, tmp_path, capsys):
    db, work = tmp_path / "db", tmp_path / "ckpts"
    work.mkdir()
    for name in ("m0", "m1", "m2"):
        (work / f"{name}.onnx").write_bytes(onnx_files[name].read_bytes())
    manifest = write_manifest(tmp_path, [{"path": str(work / f"{n}.onnx"), "name": n, "task": "cls"} for n in ("m0", "m1", "m2")])
    extract(manifest, db)
    models_before = store.read_tables(db)[0]
    old_id = int(models_before.set_index("name").at["m0", "model_id"])
    others = chunks_of(db, {i for i in models_before["model_id"] if i != old_id})
    assert len(others) == 12  # m1 and m2: three chunks of each array apiece
    hashes = chunk_hashes(db)

    (work / "m0.onnx").write_bytes(onnx_files["m3"].read_bytes())  # a new version under the old name
    capsys.readouterr()
    cli = ["extract", str(manifest), "--db", str(db), "--chunk-rows", str(CHUNK), "--no-progress", "--workers", "1", "--dashboard-address", ":0"]
    assert main(cli) == 2
    err = capsys.readouterr().err
    assert str(work / "m0.onnx") in err and "--replace-changed" in err and "Nothing was changed" in err
    pd.testing.assert_frame_equal(store.read_tables(db)[0], models_before)

    assert main([*cli, "--replace-changed"]) == 0
    models, _ = store.read_tables(db)
    live = store.live_models(models)
    assert sorted(live["name"]) == ["m0", "m1", "m2"] and (live["status"] == "ok").all()
    new_id = int(live.set_index("name").at["m0", "model_id"])
    assert new_id != old_id and models.set_index("model_id").at[old_id, "status"] == store.REMOVED
    after = chunk_hashes(db)
    assert {k: after[k] for k in others} == {k: hashes[k] for k in others}  # other models' chunks byte-identical
    assert {k: after[k] for k in hashes} == hashes  # and the old version's rows were not rewritten either
    assert verify(db) == []

    opened = store.open_database(db)
    assert old_id not in set(opened.models["model_id"]) and old_id not in set(opened.layers["model_id"])
    assert main(["analyze", str(db), "--by", "model", "--threads", "--name", "after", "--no-progress"]) == 0
    analysed = pd.read_parquet(db / store.RESULTS_DIR / "after" / "models.parquet")
    assert sorted(analysed["model_id"]) == sorted(set(live["model_id"])) and old_id not in set(analysed["model_id"])
    assert int(analysed["n_filters"].sum()) == 3 * 48
    assert plan_extraction(read_manifest(manifest), db).to_stage == ()


def test_a_touched_file_with_the_same_content_is_not_a_change(onnx_files, tmp_path):
    import os

    db = tmp_path / "db"
    local = tmp_path / "m1.onnx"
    local.write_bytes(onnx_files["m1"].read_bytes())
    manifest = write_manifest(tmp_path, [{"path": str(local), "name": "m1"}])
    extract(manifest, db)
    os.utime(local, ns=(1, 1))
    plan = plan_extraction(read_manifest(manifest), db)
    assert plan.changed == () and len(plan.to_stage) == 1
    report = extract(manifest, db)
    assert report.n_new_models == 0 and report.n_new_filters == 0
    models = store.read_tables(db)[0]
    assert len(models) == 1 and int(models.at[0, "mtime_ns"]) == 1
    assert plan_extraction(read_manifest(manifest), db).to_stage == ()


def test_remove_then_verify(onnx_files, tmp_path, capsys):
    db = tmp_path / "db"
    rows = [{"path": str(onnx_files[n]), "name": n, "task": t} for n, t in (("m0", "cls"), ("m1", "seg"), ("m2", "cls"))]
    rows.append({"path": str(tmp_path / "missing.onnx"), "name": "typo"})
    extract(write_manifest(tmp_path, rows), db)
    hashes = chunk_hashes(db)
    removed_id = int(store.read_tables(db)[0].set_index("name").at["m1", "model_id"])

    assert main(["remove", str(db), "m1", "nobody"]) == 2  # all or nothing
    assert "no model named 'nobody'" in capsys.readouterr().err and len(store.live_models(store.read_tables(db)[0])) == 4
    with store.writer_lock(db), pytest.raises(store.DatabaseError, match="being written"):
        store.remove_models(db, ["m1"])

    assert main(["remove", str(db), "m1", "typo"]) == 0
    assert "removed 2 model(s)" in capsys.readouterr().out
    models, _ = store.read_tables(db)
    assert list(models.loc[models["name"] == "m1", "status"]) == [store.REMOVED] and "typo" not in set(models["name"])
    assert chunk_hashes(db) == hashes  # nothing in the store was rewritten
    assert main(["verify", str(db)]) == 0 and "OK" in capsys.readouterr().out

    text = info_text(db, capsys)
    assert "m1" not in text and "typo" not in text and "models: 2 ok\n" in text and "removed: 2 model(s)" not in text
    assert "removed: 1 model(s); 48 of their filter rows stay" in text
    assert main(["analyze", str(db), "--by", "task", "--threads", "--name", "t", "--no-progress"]) == 0
    analysed = pd.read_parquet(db / store.RESULTS_DIR / "t" / "models.parquet")
    assert removed_id not in set(analysed["model_id"]) and int(analysed["n_filters"].sum()) == 2 * 48

    extract(write_manifest(tmp_path, rows[:3]), db)  # extracting the name again stores it anew
    live = store.live_models(store.read_tables(db)[0]).set_index("name")
    assert live.at["m1", "status"] == "ok" and int(live.at["m1", "model_id"]) != removed_id
    problems = verify(db) + stale_analyses(db)
    assert len(problems) == 1 and "results 't'" in problems[0]  # only the analysis made before is stale
