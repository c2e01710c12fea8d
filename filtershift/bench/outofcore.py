"""The out-of-core analysis measurement of ``filtershift bench --out-of-core``: the whole
``filtershift analyze`` command, run cold, on a synthetic store (issue 14, docs/performance.md).

Cold: before each run every file of the store is dropped from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` (no root needed; clean pages only, so the store is synced
first), so the run reads from the disk whatever the size of RAM. While the command runs, its
process tree is sampled (psutil): per process the bytes it read from the block device
(``/proc/PID/io`` ``read_bytes``), its CPU time and its peak RSS (``VmHWM``). Linux adds the I/O
of reaped children to their parent's counters (a nanny reaps its worker at shutdown), so a child's
bytes are subtracted from a parent sampled after the child was gone; the machine-wide bytes read
from block devices over the run (``disk_read_bytes``) are reported beside, as a cross-check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SAMPLE_SECONDS = 0.2


def drop_cache(folder: str | os.PathLike) -> int:
    """Evict every file under ``folder`` from the page cache; returns the bytes advised."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return total


def _peak_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(argv: list[str], env: dict | None = None) -> dict:
    """Run ``argv`` to completion, sampling its process tree; the wall time, and per process the
    bytes read from disk, CPU seconds and peak RSS (the last sample of each)."""
    import psutil

    seen: dict[int, dict] = {}
    disk_before = psutil.disk_io_counters()
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
        except psutil.Error:
            tree = []
        now = time.perf_counter()
        for p in tree:
            try:
                with p.oneshot():
                    cpu = p.cpu_times()
                    seen[p.pid] = {"name": " ".join(p.cmdline()[1:3])[:60], "read_bytes": p.io_counters().read_bytes,
                                   "cpu_seconds": cpu.user + cpu.system, "peak_rss": _peak_rss(p.pid), "ppid": p.ppid(), "at": now}
            except (psutil.Error, OSError):
                continue
        time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - t
    disk_after = psutil.disk_io_counters()
    output = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{output[-2000:]}")
    procs = list(seen.values())
    cpu = sum(p["cpu_seconds"] for p in procs)
    return {
        "seconds": wall, "cpu_seconds": cpu, "cores_busy": cpu / wall if wall else 0.0,
        "read_bytes": sum(_own_read_bytes(seen).values()),
        "disk_read_bytes": (disk_after.read_bytes - disk_before.read_bytes) if disk_before and disk_after else None,
        "peak_rss_mib_per_process": sorted((p["peak_rss"] / 2**20 for p in procs), reverse=True),
        "log": [line for line in output.splitlines() if line.startswith(("read ", "results:", "wrote "))],
    }


def _own_read_bytes(seen: dict[int, dict]) -> dict[int, int]:
    """Each process's own bytes: its last count less the whole counts of its children that were gone
    before its last sample (reaped into it by then). A child's whole count is its last count plus
    those of its own children seen after it (reaped into it before it ended)."""
    children: dict[int, list[int]] = {}
    for pid, p in seen.items():
        children.setdefault(p["ppid"], []).append(pid)

    def whole(pid: int) -> int:
        return seen[pid]["read_bytes"] + sum(whole(c) for c in children.get(pid, ()) if seen[c]["at"] >= seen[pid]["at"])

    return {pid: max(p["read_bytes"] - sum(whole(c) for c in children.get(pid, ()) if seen[c]["at"] < p["at"]), 0)
            for pid, p in seen.items()}


def analyze_cold(db: Path, name: str, extra: tuple[str, ...] = (), command: tuple[str, ...] | None = None,
                 env: dict | None = None) -> dict:
    """``filtershift analyze DB --name NAME --no-progress EXTRA`` with the store dropped from the
    page cache first (see the module); ``command`` is how filtershift is started (default: this
    Python's ``-m filtershift``)."""
    dropped = drop_cache(Path(db) / "filters.zarr")
    argv = [*(command or (sys.executable, "-m", "filtershift")), "analyze", str(db), "--name", name, "--no-progress",
            "--dashboard-address", ":0", *extra]
    out = run_measured(argv, env)
    out["dropped_bytes"] = dropped
    return out


def run_out_of_core(n_filters: int, data: Path, repeats: int = 1, seed: int = 0, workers: int = 2, log=print) -> dict:
    """The out-of-core section of ``filtershift bench``: the bench's synthetic store of
    ``n_filters`` (built once under ``data``), then ``repeats`` cold runs of ``filtershift analyze``
    (defaults, ``workers`` worker processes); each run's figures and their medians."""
    import statistics

    from filtershift.bench.synthetic import ensure_database

    db, build_seconds = ensure_database(Path(data), n_filters, seed, log=log)
    runs = []
    for r in range(repeats):
        out = analyze_cold(db.path, "bench-out-of-core", ("--workers", str(workers)))
        log(f"out-of-core run {r + 1}: {out['seconds']:.1f} s, {out['read_bytes'] / 1e9:.2f} GB read, "
            f"{out['cores_busy']:.2f} cores busy, peak RSS {max(out['peak_rss_mib_per_process'], default=0):.0f} MiB")
        runs.append(out)
    store_bytes = sum(f.stat().st_size for f in (db.path / "filters.zarr").rglob("*") if f.is_file())
    median = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "cpu_seconds", "cores_busy", "read_bytes")}
    return {
        "n_filters": n_filters, "store_bytes": store_bytes, "build_seconds": build_seconds, "workers": workers,
        "cold": "every file of filters.zarr dropped from the page cache with posix_fadvise(DONTNEED) before each run",
        "median": median, "max_peak_rss_mib": max(max(r["peak_rss_mib_per_process"], default=0) for r in runs), "runs": runs,
    }
