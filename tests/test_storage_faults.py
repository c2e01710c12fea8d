"""A full disk or a read-only target: a clear error, and nothing already stored is damaged.

Real file systems: a small tmpfs, filled up, then remounted read-only (needs root, as in CI)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.cli import main
from filtershift.store.verify import verify

from tests.nets import make_model, save_all_formats

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_then_read_only(small_disk, tmp_path, capsys):
    folder = tmp_path / "ckpts"
    rows = [{"path": str(p), "name": f"m{s}-{k}"} for s in range(4) for k, p in save_all_formats(make_model(s), folder, f"m{s}").items() if k == "onnx"]
    pd.DataFrame(rows[:2]).to_csv(tmp_path / "first.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "all.csv", index=False)
    db = small_disk / "db"
    args = ["--db", str(db), "--chunk-rows", "128", "--no-progress", "--workers", "1", "--dashboard-address", ":0"]
    assert main(["extract", str(tmp_path / "first.csv"), *args]) == 0
    before = store.open_database(db).filters().compute()

    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free - 4096))  # leave one page
    assert main(["extract", str(tmp_path / "all.csv"), *args]) == 3
    assert "No space left on device" in capsys.readouterr().err
    assert verify(db) == [] and np.array_equal(store.open_database(db).filters().compute(), before)

    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["extract", str(tmp_path / "all.csv"), *args]) == 3
    assert "Read-only file system" in capsys.readouterr().err
    assert verify(db) == [] and np.array_equal(store.open_database(db).filters().compute(), before)

    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert main(["extract", str(tmp_path / "all.csv"), *args]) == 0
    assert verify(db) == [] and len(store.open_database(db).models) == 4
