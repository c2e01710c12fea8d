"""Hostile and broken input: each gets a status and a one-line reason; the good ones are extracted."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file
from torch import nn

from filtershift import store
from filtershift.cli import main
from filtershift.extraction.kernels import model_kernels
from filtershift.readers import read_convolutions

from tests.nets import export_onnx, make_model


class Payload:
    """Unpickling this runs ``os.system`` — unless the loader refuses to."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "PAYLOAD_RAN"
    rows = []

    def add(path, reason_key, **extra):
        rows.append({"path": path, "name": reason_key, **extra})

    model = make_model(0)
    torch.save(model.state_dict(), folder / "good.pt")
    add("good.pt", "good")
    export_onnx(model, folder / "good.onnx")
    add("good.onnx", "good-onnx")
    # a pickle whose unpickling would run a shell command, as torch.save would write it
    torch.save({"conv.weight": torch.zeros(2, 2, 3, 3), "evil": Payload(marker)}, folder / "evil.pt")
    add("evil.pt", "malicious")
    with open(folder / "evil_plain.pkl", "wb") as f:  # a legacy (non-zip) pickle
        pickle.dump(Payload(marker), f)
    add("evil_plain.pkl", "malicious-legacy", format="torch")
    data = (folder / "good.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    add("truncated.pt", "truncated-pt")
    onnx_bytes = (folder / "good.onnx").read_bytes()
    (folder / "truncated.onnx").write_bytes(onnx_bytes[: len(onnx_bytes) // 3])
    add("truncated.onnx", "truncated-onnx")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "good.safetensors")
    st = (folder / "good.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(st[: len(st) // 2])
    add("truncated.safetensors", "truncated-safetensors")
    (folder / "really_onnx.pt").write_bytes(onnx_bytes)
    add("really_onnx.pt", "wrong-format")
    bad = make_model(1)
    with torch.no_grad():
        bad.conv1.weight[0, 0, 1, 1] = float("nan")
        bad.grouped.weight[1, 0, 0, 0] = float("inf")
    torch.save(bad.state_dict(), folder / "nan.pt")
    add("nan.pt", "nan")
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4, 2)).state_dict(), folder / "no3x3.pt")
    add("no3x3.pt", "no-3x3")
    add("missing.pt", "missing")
    add("good.pt", "duplicate")
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder, marker


def test_every_hostile_input_gets_a_status_and_reason_and_the_good_ones_are_extracted(hostile, tmp_path, capsys):
    folder, marker = hostile
    code = main(["extract", str(folder / "manifest.csv"), "--db", str(tmp_path / "db"), "--workers", "1", "--no-progress", "--dashboard-address", ":0"])
    out = capsys.readouterr().out
    assert code == 1  # something failed, and the exit code says so
    assert not marker.exists(), "the malicious pickle's payload ran"
    models = store.open_database(tmp_path / "db").models.set_index("name")
    expect = {
        "good": ("ok", ""), "good-onnx": ("ok", ""),
        "malicious": ("failed", "refused to unpickle"), "malicious-legacy": ("failed", "refused to unpickle"),
        "truncated-pt": ("failed", "torch reader"), "truncated-onnx": ("failed", "not a readable ONNX model"),
        "truncated-safetensors": ("failed", "safetensors"), "wrong-format": ("failed", "torch reader"),
        "nan": ("failed", "non-finite weights"), "no-3x3": ("skipped", "no 3x3 regular convolution"),
        "missing": ("failed", "file not found"), "duplicate": ("skipped", "duplicate of row 1"),
    }
    for name, (status, reason) in expect.items():
        assert models.at[name, "status"] == status, (name, models.at[name, "error"])
        assert reason in models.at[name, "error"], (name, models.at[name, "error"])
        assert "\n" not in models.at[name, "error"]
        if status != "ok":
            assert f"{status}: {name}" in out  # the run's summary lists it with its reason
    assert models.loc[["good", "good-onnx"], "n_filters"].gt(0).all()
    assert (tmp_path / "db" / "models.parquet").exists() and main(["verify", str(tmp_path / "db")]) == 0


def test_quantized_onnx_convolutions_are_dequantized(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 127, size=(4, 2, 3, 3), dtype=np.int8)
    scale = np.array([0.01, 0.02, 0.03, 0.04], np.float32)
    zero = np.zeros(4, np.int8)
    inits = [numpy_helper.from_array(a, n) for n, a in
             (("w", q), ("ws", scale), ("wz", zero), ("xs", np.float32(0.1)), ("xz", np.uint8(0)), ("ys", np.float32(0.1)), ("yz", np.uint8(0)))]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="qconv", pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    onnx.save(helper.make_model(graph), tmp_path / "q.onnx")
    (layer,) = model_kernels(read_convolutions(tmp_path / "q.onnx", "onnx")).layers
    np.testing.assert_array_equal(layer.kernels, (q.astype(np.float32) * scale[:, None, None, None]).reshape(-1, 9))


def test_manifest_level_problems_fail_before_any_work(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("file,task\nx.pt,cls\n")
    assert main(["extract", str(tmp_path / "bad.csv"), "--db", str(tmp_path / "db")]) == 2
    assert "no 'path' column" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()


def _zip_member_offsets(path: Path) -> list[int]:
    """A byte inside the data of each non-empty member of a zip archive."""
    import struct
    import zipfile

    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        out = []
        for info in archive.infolist():
            if info.file_size:
                name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
                out.append(info.header_offset + 30 + name_len + extra_len + min(3, info.file_size - 1))
        return out


@pytest.fixture(scope="module")
def damaged_pickles(tmp_path_factory):
    """Real torch.save files, new zip format and legacy, cut short at several offsets and with
    flipped bytes where the format can tell (zip: in a member's data, CRC-32; legacy: its header)."""
    folder = tmp_path_factory.mktemp("damaged")
    rows = []
    model = make_model(2)
    for kind, new_zip in (("zip", True), ("legacy", False)):
        good = folder / f"good-{kind}.pt"
        torch.save(model.state_dict(), good, _use_new_zipfile_serialization=new_zip)
        data = good.read_bytes()
        cuts = {f"cut{f}": data[: int(len(data) * f)] for f in (0.0, 0.02, 0.3, 0.6, 0.95)}
        cuts["cut-1"] = data[:-1]
        flips = _zip_member_offsets(good) if new_zip else [0, 2, 12]
        for i, offset in enumerate(flips):
            b = bytearray(data)
            b[offset] ^= 0xFF
            cuts[f"flip{i}"] = bytes(b)
        for case, content in cuts.items():
            (folder / f"{kind}-{case}.pt").write_bytes(content)
            rows.append({"path": f"{kind}-{case}.pt", "name": f"{kind}-{case}", "format": "torch"})
        rows.append({"path": good.name, "name": f"good-{kind}", "format": "torch"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder, rows


def test_truncated_or_corrupt_pickles_say_so(damaged_pickles, tmp_path, capsys):
    folder, rows = damaged_pickles
    code = main(["extract", str(folder / "manifest.csv"), "--db", str(tmp_path / "db"), "--workers", "1", "--no-progress", "--dashboard-address", ":0"])
    capsys.readouterr()
    assert code == 1
    models = store.open_database(tmp_path / "db").models.set_index("name")
    assert len(models) == len(rows)
    for row in rows:
        status, error = models.at[row["name"], "status"], models.at[row["name"], "error"]
        if row["name"].startswith("good-"):
            assert status == "ok", error
            continue
        assert status == "failed", (row["name"], error)
        assert f"{row['path']}: truncated or corrupt PyTorch checkpoint (" in error, (row["name"], error)
        assert error.endswith("re-download or re-save it") and "\n" not in error, (row["name"], error)
        assert "Errno" not in error and "refused to unpickle" not in error, (row["name"], error)
    assert "CRC-32" in models.at["zip-flip0", "error"]
    assert "the zip archive ends early" in models.at["zip-cut0.95", "error"]
    assert "the pickle ends early" in models.at["legacy-cut0.6", "error"]
    assert "the file is empty" in models.at["zip-cut0.0", "error"]


def test_a_truncated_torchscript_archive_says_so(tmp_path):
    import warnings

    path = tmp_path / "model.torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch >= 2.10
        torch.jit.save(torch.jit.script(make_model(0)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.torchscript: truncated or corrupt PyTorch checkpoint"):
        read_convolutions(path, "torchscript")


def test_every_command_accepts_no_progress():
    from filtershift.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert len(commands) >= 14
    lacking = [name for name, sub in commands.items() if "--no-progress" not in sub._option_string_actions]
    assert lacking == []
