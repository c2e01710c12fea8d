"""Before/after of a cold ``filtershift analyze`` (issue 14): alternating runs of the code at two
worktrees on one synthetic store, each run cold (filtershift.bench.outofcore.drop_cache).

    python benchmarks/outofcore_compare.py DB OLD_TREE NEW_TREE REPEATS VARIANT...

VARIANT is old | old-t2 | new-fill (moments file removed first) | new | new-t2 (-t2: 2 threads per worker).
Prints one JSON line per run. (The read-ahead variants measured in docs/performance.md, "new-p<K>",
set a knob that no longer exists: the tree they ran is named there.)
"""

import json
import os
import sys
from pathlib import Path

from filtershift.bench.outofcore import analyze_cold

COMMAND = (sys.executable, "-m", "filtershift")
EXTRA = {v: ("--workers", "2", "--threads-per-worker", "2") for v in ("old-t2", "new-t2")}


def variant_command(variant: str, old: str, new: str):
    if variant not in ("old", "old-t2", "new", "new-fill", "new-t2"):
        raise SystemExit(f"unknown variant {variant!r}: old, old-t2, new, new-fill or new-t2")
    return (old if variant.startswith("old") else new), COMMAND, EXTRA.get(variant, ())


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
