"""Fault injection: ``extract`` killed (SIGKILL to its whole process group) at named points, then
rerun, must give the database an uninterrupted run gives, bit for bit; so must a run during which
a worker dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.store.verify import verify

from tests.nets import make_model, save_all_formats

CHUNK = 64


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faultzoo")
    rows = []
    for seed in range(4):
        for kind, path in save_all_formats(make_model(seed), folder, f"m{seed}").items():
            if kind in ("torchscript", "onnx", "checkpoint"):  # formats that need no arch inside workers
                rows.append({"path": path.name, "name": f"m{seed}-{kind}", "task": "classification", "data_type": "natural"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def run_extract(manifest: Path, db: Path, workers: int = 1, **env) -> int:
    full_env = {**os.environ, **{f"FILTERSHIFT_{k.upper()}": v for k, v in env.items()}}
    proc = subprocess.run(
        [sys.executable, "-m", "filtershift", "extract", str(manifest), "--db", str(db), "--workers", str(workers),
         "--chunk-rows", str(CHUNK), "--no-progress", "--dashboard-address", ":0"],
        env=full_env, start_new_session=True, capture_output=True, text=True, timeout=300,
    )
    return proc.returncode


def snapshot(db: Path) -> dict:
    root = db / store.FILTERS_STORE
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return {"files": files, "models": pd.read_parquet(db / store.MODELS_TABLE), "layers": pd.read_parquet(db / store.LAYERS_TABLE)}


def assert_same_database(db: Path, reference: dict) -> None:
    got = snapshot(db)
    assert got["files"].keys() == reference["files"].keys()
    for name, data in reference["files"].items():
        assert got["files"][name] == data, name  # every chunk and metadata file, byte for byte
    pd.testing.assert_frame_equal(got["models"], reference["models"])
    pd.testing.assert_frame_equal(got["layers"], reference["layers"])
    assert verify(db) == []
    assert not any((db / ".staging").iterdir()) if (db / ".staging").exists() else True


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> dict:
    db = tmp_path_factory.mktemp("reference") / "db"
    assert run_extract(manifest, db) == 0
    return snapshot(db)


@pytest.mark.parametrize("point", [
    "stage:after-write",  # some checkpoints staged, none consolidated
    "consolidate:chunk-written",  # store resized, one chunk's filters written, its layer ids not
    pytest.param("consolidate:rows-written", marks=pytest.mark.slow),  # every chunk written, no table
    "consolidate:layers-written",  # layers table ahead of the models table (the commit)
    pytest.param("consolidate:committed", marks=pytest.mark.slow),  # committed, staging not yet cleaned
])
def test_killed_extract_reruns_to_the_same_database(point, manifest, reference, tmp_path):
    db = tmp_path / "db"
    code = run_extract(manifest, db, failpoint=point, failpoint_once=str(tmp_path / "fired"))
    assert code == -signal.SIGKILL and (tmp_path / "fired").exists()
    assert run_extract(manifest, db) == 0
    assert_same_database(db, reference)


def test_worker_killed_mid_task_is_retried_and_the_result_is_exact(manifest, reference, tmp_path):
    db = tmp_path / "db"
    code = run_extract(manifest, db, workers=2, failpoint="stage:before-write", failpoint_action="exit", failpoint_once=str(tmp_path / "fired"))
    assert (tmp_path / "fired").exists() and code == 0
    assert_same_database(db, reference)


def test_interrupted_append_keeps_the_existing_database(manifest, reference, tmp_path):
    """Killed while appending to an existing database: the old models stay intact and readable."""
    db = tmp_path / "db"
    rows = pd.read_csv(manifest)
    first = manifest.parent / "first-half.csv"
    rows.iloc[: len(rows) // 2].to_csv(first, index=False)
    assert run_extract(first, db) == 0
    before = store.open_database(db)
    old = before.filters().compute()
    assert run_extract(manifest, db, failpoint="consolidate:chunk-written", failpoint_once=str(tmp_path / "fired")) == -signal.SIGKILL
    during = store.open_database(db)  # readers see the old database, whole
    assert during.n_rows == before.n_rows
    np.testing.assert_array_equal(during.filters().compute(), old)
    assert run_extract(manifest, db) == 0
    assert verify(db) == []
    np.testing.assert_array_equal(store.open_database(db).filters().compute(), np.asarray(reference_filters(reference)))


def reference_filters(reference: dict) -> np.ndarray:
    import zarr
    from zarr.storage import MemoryStore

    # rebuild the reference array from its stored chunk files
    memory = MemoryStore()
    import asyncio
    from zarr.core.buffer import default_buffer_prototype

    async def fill():
        for name, data in reference["files"].items():
            await memory.set(name, default_buffer_prototype().buffer.from_bytes(data))

    asyncio.run(fill())
    n = int(reference["layers"]["stop"].max())
    return zarr.open_group(memory, mode="r")["filters"][:n]
