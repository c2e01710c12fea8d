"""notebooks/explore.ipynb runs top to bottom (nbclient). CI points it at the demo zoo with
``FILTERSHIFT_DB=/path/to/db FILTERSHIFT_RESULTS=name``; without them the notebook builds and
analyses the small synthetic database itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "explore.ipynb"


def test_explore_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_db = os.environ.get("FILTERSHIFT_DB")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    bokeh_outputs = [o for o in outputs if "application/vnd.holoviews_load.v0+json" in o.get("data", {}) or "text/html" in o.get("data", {})]
    assert len(bokeh_outputs) >= 4, f"expected rendered figures (DB={env_db or 'synthetic'})"
    nbformat.write(nb, tmp_path / "explore.executed.ipynb")
