from __future__ import annotations

import dask
import pytest

from filtershift.readers import arch


@pytest.fixture(autouse=True)
def synchronous_dask():
    """In-process tests run on dask's synchronous scheduler unless they start a cluster."""
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture
def tests_arch(monkeypatch):
    """Register the tests' own architecture builders under the ``tests:`` arch prefix."""
    monkeypatch.setitem(arch.ARCH_BUILDERS, "tests", "tests.nets:build")
