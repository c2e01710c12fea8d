"""Before/after of a cold ``filtershift analyze`` (issue 14): alternating runs of the code at two
worktrees on one synthetic store, each run cold (filtershift.bench.outofcore.drop_cache).

    python benchmarks/outofcore_compare.py DB OLD_TREE NEW_TREE REPEATS VARIANT...

VARIANT is old | new-fill (moments file removed first) | new-p<K> (K chunks prefetched) |
new-t2 (2 threads per worker, no prefetch). Prints one JSON line per run.
"""

import json
import os
import sys
from pathlib import Path

from filtershift.bench.outofcore import analyze_cold

PY = sys.executable
LAUNCH = "import sys, filtershift.store.database as d; d.PREFETCH_CHUNKS = {k}; from filtershift.cli import main; sys.argv[0] = 'filtershift'; sys.exit(main(sys.argv[1:]))"


def variant_command(variant: str, old: str, new: str):
    if variant == "old":
        return old, (PY, "-m", "filtershift"), ()
    if variant == "new-fill":
        return new, (PY, "-c", LAUNCH.format(k=2)), ()
    if variant == "new-t2":
        return new, (PY, "-c", LAUNCH.format(k=0)), ("--workers", "2", "--threads-per-worker", "2")
    return new, (PY, "-c", LAUNCH.format(k=int(variant.removeprefix("new-p")))), ()


def main(db: str, old: str, new: str, repeats: str, *variants: str) -> None:
    for r in range(int(repeats)):
        for v in variants:
            tree, command, extra = variant_command(v, old, new)
            if v == "new-fill":
                (Path(db) / "layer_moments.npz").unlink(missing_ok=True)
            env = dict(os.environ, PYTHONPATH=tree)
            out = analyze_cold(Path(db), f"cmp-{v}", extra, command, env)
            print(json.dumps({"variant": v, "repeat": r, **out}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
