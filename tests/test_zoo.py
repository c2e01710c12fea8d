"""The demo zoo: plan, procedural data, architectures, a tiny build checked against its manifest,
formats, determinism across schedulers, and the measured training effect."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from filtershift.readers.arch import build_arch
from filtershift.analysis.layerstats import is_degenerate, layer_entropy, layer_sparsity
from filtershift.zoo import effect
from filtershift.zoo.build import build_zoo
from filtershift.zoo.datasets import CHANNELS, DATA_TYPES, N_CLASSES, make_dataset
from filtershift.zoo.models import ARCHITECTURES, build, conv_kernel_counts
from filtershift.zoo.plan import FORMATS, plan_zoo

MANIFEST_COLUMNS = ["path", "name", "format", "task", "data_type", "dataset", "family", "arch"]


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    with dask.config.set(scheduler="synchronous"):
        build_zoo(root, "tiny", seed=0)
    return root


@pytest.fixture(scope="module")
def manifest(tiny_zoo) -> pd.DataFrame:
    return pd.read_csv(tiny_zoo / "manifest.csv")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_state(path: Path, fmt: str) -> dict:
    """The state dict of a zoo checkpoint in a state-dict format, as float32 tensors."""
    if fmt == "safetensors":
        state = load_file(path)
    else:
        obj = torch.load(path, weights_only=True)
        state = next((obj[k] for k in ("state_dict", "model_state_dict") if isinstance(obj, dict) and k in obj), obj)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# --- plan, data, architectures (no training) -------------------------------------------------------


@pytest.mark.parametrize("size", ["tiny", "small", "large"])
def test_plan_is_a_deterministic_varied_value(size):
    plan = plan_zoo(size, seed=3)
    assert plan == plan_zoo(size, seed=3)
    assert plan != plan_zoo(size, seed=4)
    assert len({s.name for s in plan}) == len(plan)
    assert {s.format for s in plan} == set(FORMATS)
    assert {"vgg", "resnet", "mobilenet", "unet", "dcgan", "srnet", "detnet"} <= {s.family for s in plan}
    assert any(s.control for s in plan) and any(s.fp16_copy for s in plan)
    assert sum(s.note.startswith("over-sized") for s in plan) == 1
    assert len({s.seed for s in plan}) == len(plan)


def test_large_plan_has_hundreds_of_models_and_ten_million_kernels():
    plan = plan_zoo("large")
    n_checkpoints = kernels = 0
    for spec in plan:
        from filtershift.zoo.train import arch_kwargs

        roles = ("generator", "discriminator") if spec.family == "dcgan" else ("model",)
        for role in roles:
            name, kwargs = arch_kwargs(spec, role)
            k = conv_kernel_counts(build(name, **kwargs))[2]
            copies = 1 + spec.fp16_copy + spec.control
            n_checkpoints += copies
            kernels += k * copies
    assert n_checkpoints >= 200
    assert kernels >= 10_000_000


@pytest.mark.parametrize("data_type", DATA_TYPES)
def test_datasets_are_seeded_standardised_and_labelled(data_type):
    a = make_dataset(data_type, 64, 16, 0)
    b = make_dataset.__wrapped__(data_type, 64, 16, 0)
    c = make_dataset.__wrapped__(data_type, 64, 16, 1)
    assert a.images.shape == (64, CHANNELS[data_type], 16, 16) and a.images.dtype == np.float32
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert abs(a.images.mean()) < 1e-4 and abs(a.images.std() - 1) < 1e-3
    assert set(np.unique(a.labels)) <= set(range(N_CLASSES[data_type])) and len(np.unique(a.labels)) > 1
    assert set(np.unique(a.masks)) <= {0.0, 1.0}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_build_via_arch_spec_and_count_kernels(name):
    module = build_arch(f"zoo:{name}")
    assert isinstance(module, nn.Module)
    n_conv, n_3x3, n_kernels = conv_kernel_counts(module)
    expected = sum(m.weight.shape[0] * m.weight.shape[1] for m in module.modules()
                   if type(m) is nn.Conv2d and m.kernel_size == (3, 3))
    assert n_kernels == expected > 0 and n_conv >= n_3x3 >= 1
    if name in ("unet", "dcgan_g"):
        assert any(isinstance(m, nn.ConvTranspose2d) for m in module.modules())
    with pytest.raises(KeyError):
        build("no-such-net")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated; zoo still writes it
        torch.jit.script(module)  # every architecture can be saved as TorchScript


def test_effect_measures():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (2000, 9)), rng.uniform(-1, 1, (2000, 9))
    assert effect.shift_from_init(a, a) == 0.0
    assert effect.shift_from_init(a, b) == pytest.approx(effect.shift_from_init(b, a))
    assert layer_entropy(np.outer(rng.normal(size=50), rng.normal(size=9))) == pytest.approx(0, abs=1e-9)
    assert layer_entropy(a) == pytest.approx(np.log10(9), abs=0.02)
    assert is_degenerate(a)  # uniform random filters are at the randomness threshold
    sparse = np.zeros((100, 9))
    sparse[:5] = rng.normal(size=(5, 9))
    assert layer_sparsity(sparse) == 0.95 and layer_sparsity(np.zeros((4, 9))) == 1.0


def test_cli_dry_run_prints_the_plan(capsys):
    from filtershift.cli import main

    assert main(["zoo", "unused-dir", "--size", "tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(plan_zoo("tiny")) and all(line.startswith("train-") for line in out)


# --- a tiny zoo, built once ------------------------------------------------------------------------


def test_manifest_matches_files(tiny_zoo, manifest):
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert manifest["name"].is_unique
    files = {p.relative_to(tiny_zoo).as_posix() for p in tiny_zoo.rglob("*") if p.is_file()}
    assert files - {"manifest.csv", "training_effect.csv"} == set(manifest["path"])
    assert set(manifest["format"]) == {"torch", "torchscript", "safetensors", "onnx"}
    assert set(manifest["container"]) == {"state_dict", "checkpoint", "torchscript", "onnx"}
    assert set(manifest["precision"]) == {"float32", "float16"}
    assert manifest["arch"].str.startswith("zoo:").all()
    controls = manifest[~manifest["trained"]]
    assert len(controls) >= 5 and (controls["dataset"] == "none").all() and (controls["steps"] == 0).all()
    assert controls["task"].notna().all() and controls["data_type"].notna().all()
    assert {"gan-generator", "gan-discriminator", "classification", "segmentation", "detection",
            "super-resolution"} <= set(manifest["task"])
    assert (manifest[manifest["trained"]]["dataset"].str.startswith("procedural-")).all()


def test_state_dict_checkpoints_load_into_their_arch_and_match_kernel_counts(tiny_zoo, manifest):
    rows = manifest[manifest["container"].isin(["state_dict", "checkpoint"])]
    for row in rows.itertuples():
        module = build_arch(row.arch)
        state = load_state(tiny_zoo / row.path, row.format)
        module.load_state_dict(state)  # strict
        assert conv_kernel_counts(module)[2] == row.n_kernels_3x3, row.name
        if row.container == "checkpoint":
            obj = torch.load(tiny_zoo / row.path, weights_only=True)
            assert obj["optimizer"]["state"], row.name


def test_fp16_copies_equal_their_float32_model(tiny_zoo, manifest):
    halves = manifest[manifest["precision"] == "float16"]
    assert len(halves) >= 2
    for row in halves.itertuples():
        state = (load_file(tiny_zoo / row.path) if row.format == "safetensors" else torch.load(tiny_zoo / row.path, weights_only=True))
        assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
        full = manifest.set_index("name").loc[row.name.removesuffix("-fp16")]
        if full["container"] in ("state_dict", "checkpoint"):
            ref = load_state(tiny_zoo / full["path"], full["format"])
            key = next(k for k in ref if k.endswith("weight") and ref[k].dim() == 4)
            torch.testing.assert_close(state[key].float(), ref[key], atol=2e-3, rtol=2e-3)


def test_torchscript_and_onnx_files_hold_the_model(tiny_zoo, manifest):
    import onnx

    for row in manifest[manifest["format"] == "torchscript"].itertuples():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated; we still read it
            scripted = torch.jit.load(tiny_zoo / row.path)
        module = build_arch(row.arch)
        module.load_state_dict(scripted.state_dict())
        names = {m.original_name for _, m in scripted.named_modules()}
        assert "Conv2d" in names
    onnx_rows = manifest[manifest["format"] == "onnx"]
    assert len(onnx_rows) >= 2
    for row in onnx_rows.itertuples():
        model = onnx.load(tiny_zoo / row.path)
        onnx.checker.check_model(model)
        ops = {n.op_type for n in model.graph.node}
        assert "Conv" in ops, row.name
        conv_3x3 = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
        weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        kernels = sum(int(np.prod(weights[w].shape[:2])) for w in conv_3x3 if weights[w].shape[2:] == (3, 3))
        assert kernels == row.n_kernels_3x3, row.name


def test_rebuild_on_a_local_cluster_is_bit_identical(tiny_zoo, manifest):
    """One model per format (and a GAN pair, an fp16 copy, a control), rebuilt on two worker
    processes, writes the same bytes as the synchronous build."""
    from distributed import Client, LocalCluster

    plan = plan_zoo("tiny", seed=0)
    chosen = {}
    for spec in plan:
        chosen.setdefault(spec.format, spec)
    chosen["gan"] = next(s for s in plan if s.family == "dcgan")
    chosen["fp16"] = next(s for s in plan if s.fp16_copy)
    specs = tuple(dict.fromkeys(chosen.values()))
    assert any(s.control for s in specs)
    other = tiny_zoo.parent / "rebuild"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster):
        result = build_zoo(other, "tiny", seed=0, specs=specs)
    assert len(result.manifest) >= len(specs) + 2
    for row in result.manifest.itertuples():
        assert sha256(other / row.path) == sha256(tiny_zoo / row.path), row.path
    header, *rows = (other / "manifest.csv").read_text().splitlines()
    full_header, *full_rows = (tiny_zoo / "manifest.csv").read_text().splitlines()
    assert header == full_header and set(rows) <= set(full_rows)


def test_trained_models_differ_from_their_random_init_controls(tiny_zoo, manifest):
    by_name = manifest.set_index("name")
    controls = manifest[~manifest["trained"]]
    for row in controls.itertuples():
        trained = by_name.loc[row.name.removesuffix("-init")]
        if trained["container"] not in ("state_dict", "checkpoint"):
            continue
        init = load_state(tiny_zoo / row.path, row.format)
        after = load_state(tiny_zoo / trained["path"], trained["format"])
        weights = [k for k, v in init.items() if k.endswith("weight") and v.dim() == 4 and v.shape[2:] == (3, 3)]
        a = torch.cat([after[k].reshape(-1) for k in weights])
        b = torch.cat([init[k].reshape(-1) for k in weights])
        assert float((a - b).norm() / b.norm()) > 0.05, row.name
    effects = pd.read_csv(tiny_zoo / "training_effect.csv")
    regular = effects[effects["note"].isna()]
    assert (regular["rel_change"] > 0.05).all()
    # trained filters are further from their own initialisation than one initialisation is from another
    assert regular["shift_vs_init"].median() > 1.2 * regular["shift_init_vs_other_init"].median()
    big = regular[regular["n_kernels"] >= 1000]  # enough filters for 70-bin histograms
    assert len(big) >= 5 and (big["shift_vs_init"] > big["shift_init_vs_other_init"]).all()
    assert (regular["loss_final"] < regular["loss_first"]).mean() > 0.7
    oversized = effects[effects["note"].fillna("").str.startswith("over-sized")]
    # the over-sized VGG collapses to low-entropy (few-pattern, partly sparse) layers
    assert len(oversized) == 1 and oversized["median_entropy"].iloc[0] < 0.5 < regular["median_entropy"].min()


def test_untrained_controls_are_flagged_and_left_out_of_the_demo_analyses(tiny_zoo, manifest, tmp_path):
    """A control keeps its trained twin's task, data type and family and differs by ``trained``; the
    flag reaches the database's models table, and the demo job's ``where`` leaves every control out."""
    import filtershift
    from filtershift.pipeline.jobspec import load_job

    by_name = manifest.set_index("name")
    controls = manifest[~manifest["trained"]]
    for row in controls.itertuples():
        twin = by_name.loc[row.name.removesuffix("-init")]
        assert twin["trained"] and (twin["task"], twin["data_type"], twin["family"]) == (row.task, row.data_type, row.family)
    with dask.config.set(scheduler="synchronous"):
        filtershift.extract(tiny_zoo / "manifest.csv", tmp_path / "db")
    models = filtershift.open(tmp_path / "db").models
    assert set(models.loc[models["name"].str.endswith("-init"), "trained"]) == {"False"}  # manifest metadata is text
    assert set(models.loc[~models["name"].str.endswith("-init"), "trained"]) == {"True"}
    job = load_job(Path(__file__).parent.parent / "jobs" / "demo.yaml")
    for analysis in job.analyses:
        kept = models.query(analysis.where)
        assert not kept["name"].str.endswith("-init").any() and kept["trained"].eq("True").all(), analysis.name
    assert len(models.query(job.analyses[0].where)) == len(models) - len(controls)
