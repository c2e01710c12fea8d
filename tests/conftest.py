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


@pytest.fixture(scope="session")
def synthetic_db(tmp_path_factory):
    """Factory of synthetic databases, each written into a new folder of the session's tmp through
    the one generator (:func:`filtershift.bench.synthetic.write_synthetic`):
    ``synthetic_db(models, layers, filters, chunk_rows=..., seed=0)`` -> the opened database, with
    ``filters`` an array or a block function (``filtershift.bench.synthetic``)."""
    from filtershift.bench.synthetic import write_synthetic

    def make(models, layers, filters, chunk_rows: int | None = None, seed: int = 0):
        with dask.config.set(scheduler="sync"):
            return write_synthetic(tmp_path_factory.mktemp("synthetic") / "db", models, layers, filters, seed, chunk_rows)

    return make


@pytest.fixture
def chromium(tmp_path):
    """Factory of headless Chromium webdrivers for the browser tests: ``chromium(width, height)``
    (browser console logged), each quit at the end of the test."""
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.chrome.webdriver import WebDriver

    from filtershift.figures.save import CHROMIUM_OPTIONS, find_chromedriver

    drivers = []

    def start(width: int, height: int):
        options = Options()
        profile = tmp_path / f"chromium-profile-{len(drivers)}"
        for arg in ("--headless=new", *CHROMIUM_OPTIONS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(arg)
        options.binary_location = "/usr/bin/chromium"
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        drivers.append(WebDriver(service=Service(find_chromedriver()), options=options))
        return drivers[-1]

    yield start
    for driver in drivers:
        driver.quit()
