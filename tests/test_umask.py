"""Every file and folder a command creates follows the process umask (issue 18; docs/design.md §3):
0644 / 0755 under umask 022, so colleagues on a shared cluster can read a database and its results,
and 0600 / 0700 under 077.

A job (extract -> analyze -> figures), then ``report``, ``verify`` and a CNN-Filter-DB export and
re-import run as real commands in child processes whose umask is set before they start, and one
model of the demo zoo is built (checkpoint, TorchScript archive, manifest); afterwards every path
under the output folder (which they create) is checked. The whole demo zoo takes minutes, so the
zoo's stamp of ``run`` (written by the same ``atomic_write_text`` as every results file) is not
among them. Temporary files and folders renamed into place (``mkstemp``'s 0600, ``mkdtemp``'s 0700)
are what this catches.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from filtershift.store.files import atomic_folder, atomic_write_text
from tests.nets import tiny_manifest

MODES = {0o022: (0o644, 0o755), 0o077: (0o600, 0o700)}  # umask -> (file mode, folder mode)


# One demo-zoo model saved as TorchScript (plus its untrained control): the zoo's writers, in seconds.
BUILD_ONE_ZOO_MODEL = (
    "import sys\nfrom filtershift.zoo.build import build_zoo\nfrom filtershift.zoo.plan import plan_zoo\n"
    "spec = next(s for s in plan_zoo('tiny') if s.format == 'torchscript' and s.control)\n"
    "build_zoo(sys.argv[1], specs=(spec,))\n"
)


def run_child(argv: list, cwd: Path, umask: int) -> None:
    proc = subprocess.run(
        [sys.executable, *map(str, argv)],
        cwd=cwd, preexec_fn=lambda: os.umask(umask), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{proc.stderr[-3000:]}"


def run_command(args: list, cwd: Path, umask: int) -> None:
    run_child(["-m", "filtershift", *args], cwd, umask)


def wrong_modes(root: Path, file_mode: int, folder_mode: int) -> list[str]:
    """Every regular file and folder under ``root`` (itself included) whose mode is not the given one."""
    wrong = []
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        want = folder_mode if stat.S_ISDIR(st.st_mode) else file_mode if stat.S_ISREG(st.st_mode) else None
        if want is not None and stat.S_IMODE(st.st_mode) != want:
            wrong.append(f"{path.relative_to(root.parent)}: {oct(stat.S_IMODE(st.st_mode))}, expected {oct(want)}")
    return wrong


def write_job(folder: Path, manifest: Path, out: Path) -> Path:
    job = folder / "job.yaml"
    job.write_text(
        f"name: umask\nmanifest: {manifest}\ndb: {out / 'db'}\n"
        "analyses:\n  - {name: scaled, scaling: scaled, by: [task]}\n"
        f"figures: {{out: {out / 'figures'}, formats: [html]}}\n"
    )
    return job


def test_wrong_modes_reports_files_and_folders(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "file").write_text("x")
    os.chmod(root, 0o755)
    os.chmod(root / "sub", 0o700)
    os.chmod(root / "file", 0o600)
    assert wrong_modes(root, 0o644, 0o755) == ["root/file: 0o600, expected 0o644", "root/sub: 0o700, expected 0o755"]
    assert wrong_modes(root / "sub", 0o600, 0o700) == []


@pytest.mark.parametrize("umask", sorted(MODES), ids=lambda m: f"umask-{m:03o}")
def test_atomic_writers_give_the_umask_modes(umask, tmp_path):
    """The two writers everything goes through, in process (a staged folder and the files inside it
    are removed once consolidated, so the job below never shows them)."""
    previous = os.umask(umask)
    try:
        atomic_folder(tmp_path / "out" / "folder", lambda tmp: (tmp / "inside.json").write_text("{}"))
        atomic_write_text(tmp_path / "out" / "file.txt", "text")
    finally:
        os.umask(previous)
    assert (tmp_path / "out" / "folder" / "inside.json").read_text() == "{}"
    assert wrong_modes(tmp_path / "out", *MODES[umask]) == []


@pytest.mark.timeout(900)
@pytest.mark.parametrize("umask", sorted(MODES), ids=lambda m: f"umask-{m:03o}")
def test_every_created_file_and_folder_follows_the_umask(umask, tmp_path):
    out = tmp_path / "out"
    db = out / "db"
    cluster = ["--workers", "1", "--no-progress", "--dashboard-address", ":0"]
    run_child(["-c", BUILD_ONE_ZOO_MODEL, out / "zoo"], tmp_path, umask)
    run_command(["run", write_job(tmp_path, tiny_manifest(tmp_path / "input"), out), *cluster], tmp_path, umask)
    run_command(["report", db, "--name", "scaled", "--no-store", "--output", out / "report" / "scaled.html"], tmp_path, umask)
    run_command(["verify", db], tmp_path, umask)
    run_command(["export-cnnfilterdb", db, out / "export" / "db.h5", "--threads", "--no-progress"], tmp_path, umask)
    run_command(["import-cnnfilterdb", out / "export" / "db.h5", "--db", out / "imported", "--threads", "--no-progress"], tmp_path, umask)

    made = {p.relative_to(out).as_posix() for p in out.rglob("*")}
    expected = {  # one of each kind of output, so that the walk below covers them all
        "zoo/manifest.csv", "zoo/training_effect.csv", "db/models.parquet", "db/layers.parquet", "db/.lock",
        "db/.staging", "db/filters.zarr/zarr.json", "db/filters.zarr/filters/c/0/0", "db/results/pipeline.jsonl",
        "db/results/scaled/provenance.json", "db/results/scaled/layer_stats.parquet", "db/results/scaled/shift_task.csv",
        "db/results/scaled/hist_task.npz", "figures/scaled/figures.json", "report/scaled.html", "export/db.h5",
        "imported/models.parquet", "imported/import-cnnfilterdb.json", "imported/filters.zarr/layer/c/0",
    }
    assert expected <= made, sorted(expected - made)
    assert any(p.startswith("figures/scaled/") and p.endswith(".html") for p in made)
    assert {Path(p).suffix for p in made if p.startswith("zoo/")} >= {".pt", ".csv"}
    assert wrong_modes(out, *MODES[umask]) == []
