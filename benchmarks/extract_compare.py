"""Before/after of ``filtershift extract`` on the realistic checkpoints (issue 14): the plain loop
and the whole command at each worktree, alternating, page cache warm; one JSON line per run.

    python benchmarks/extract_compare.py DATA OLD_TREE NEW_TREE REPEATS [WORKERS] [cold]

DATA is a ``filtershift bench --data`` folder (the checkpoints are made there once, see
filtershift/bench/realistic.py). Run it from a folder that holds no ``filtershift`` package, so
that PYTHONPATH picks the tree. With ``cold``, the checkpoints are dropped from the page cache
(``posix_fadvise(DONTNEED)``, :func:`filtershift.bench.outofcore.drop_cache`) before each run, and
``read_bytes`` / ``checkpoint_bytes`` says how many times the command read them from the disk.
"""

import json
import os
import shutil
import sys
from pathlib import Path

from filtershift.bench.outofcore import drop_cache, run_measured
from filtershift.bench.realistic import make_realistic


def main(data: str, old: str, new: str, repeats: str, workers: str = "2", cold: str = "") -> None:
    work = Path(data) / "extract"
    manifest = make_realistic(work, 40)
    size = sum(p.stat().st_size for p in manifest.parent.iterdir())
    for p in manifest.parent.iterdir():  # warm the page cache
        p.read_bytes()
    loop = [sys.executable, "-m", "filtershift.bench.realistic", str(manifest), str(work / "loop.f32")]
    for r in range(int(repeats)):
        for name, tree in (("plain_loop", new), ("old", old), ("new", new)):
            db = work / f"cmp-{name}"
            shutil.rmtree(db, ignore_errors=True)
            argv = loop if name == "plain_loop" else [sys.executable, "-m", "filtershift", "extract", str(manifest), "--db", str(db),
                                                      "--workers", workers, "--no-progress", "--dashboard-address", ":0"]
            if cold:
                drop_cache(manifest.parent)
            out = run_measured(argv, dict(os.environ, PYTHONPATH=tree))
            print(json.dumps({"variant": name, "repeat": r, "cold": bool(cold), "checkpoint_bytes": size,
                              **{k: v for k, v in out.items() if k != "log"}}), flush=True)
            shutil.rmtree(db, ignore_errors=True)
    (work / "loop.f32").unlink(missing_ok=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
