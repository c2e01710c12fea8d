"""Small torch models the tests build, and writers for every checkpoint format."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


class MixedNet(nn.Module):
    """Every kind of layer the extraction must tell apart, in a known registration order."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)  # after a ReLU: the ONNX exporter must not fold it into conv1
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.c5 = nn.Conv2d(16, 4, 5, padding=2)
        self.deconv = nn.ConvTranspose2d(4, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.bn(torch.relu(self.conv1(x)))
        x = self.grouped(self.deconv(self.c5(self.pw(self.dw(x)))))
        return self.fc(x.mean((2, 3)))


# name, conv_index, groups, in/group, out of the 3x3 Conv2d layers of MixedNet (n_conv = 5:
# conv1, dw, pw, c5, grouped; the ConvTranspose2d is not a regular convolution).
MIXED_LAYERS = [("conv1", 0, 1, 3, 8), ("dw", 1, 8, 1, 8), ("grouped", 4, 2, 2, 8)]
MIXED_N_CONV = 5


def build(name: str, **kwargs) -> nn.Module:
    """Arch builder for tests (registered under the ``tests`` prefix)."""
    return {"mixed": MixedNet}[name](**kwargs)


def make_model(seed: int = 0) -> MixedNet:
    torch.manual_seed(seed)
    model = MixedNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    return model


def expected_kernels(model: nn.Module) -> dict[str, np.ndarray]:
    """Reference: each 3x3 Conv2d weight cast to float32, reshaped C-order to (n, 9)."""
    return {
        name: m.weight.detach().float().numpy().reshape(-1, 9)
        for name, m in model.named_modules()
        if type(m) is nn.Conv2d and m.kernel_size == (3, 3)
    }


def save_all_formats(model: nn.Module, folder: Path, stem: str) -> dict[str, Path]:
    """The same model as state dict, checkpoint dict (with optimizer state), safetensors,
    TorchScript and ONNX."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "state_dict": folder / f"{stem}.pt",
        "checkpoint": folder / f"{stem}.ckpt.pt",
        "safetensors": folder / f"{stem}.safetensors",
        "torchscript": folder / f"{stem}.ts.pt",
        "onnx": folder / f"{stem}.onnx",
    }
    torch.save(model.state_dict(), paths["state_dict"])
    trained = copy.deepcopy(model)  # a step on a copy: Adam state holds 4-D tensors like the conv weights
    optimizer = torch.optim.Adam(trained.parameters())
    trained(torch.randn(2, 3, 8, 8, dtype=next(model.parameters()).dtype)).sum().backward()
    optimizer.step()
    torch.save({"epoch": 1, "model_state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "ema": {k: v * 0 for k, v in model.state_dict().items()}}, paths["checkpoint"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, paths["safetensors"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in torch 2.10+
        torch.jit.script(model).save(str(paths["torchscript"]))
    export_onnx(model, paths["onnx"])
    return paths


def export_onnx(model: nn.Module, path: Path, **kwargs) -> None:
    dtype = next(model.parameters()).dtype
    with warnings.catch_warnings():
        # The legacy (TorchScript-based) exporter is deprecated; the dynamo one needs onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.randn(1, 3, 8, 8, dtype=dtype), str(path), dynamo=False, **kwargs)


def tiny_manifest(folder: Path) -> Path:
    """Two tiny PyTorch checkpoints and their manifest (100 3x3 filters in all)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3)).state_dict(), folder / "a.pt")
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 8, 1)).state_dict(), folder / "b.pt")
    (folder / "manifest.csv").write_text("path,task\na.pt,classification\nb.pt,segmentation\n")
    return folder / "manifest.csv"
