"""``filtershift nearest`` and ``filtershift card`` on a real (small) demo zoo: trained checkpoints,
extracted and analysed, plus an exact weight copy and a BatchNorm-folded ONNX conversion written
here. The answers are checked against the analysis's own tables (model pairs, group histograms)."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest

from filtershift.analysis.divergence import shift
from filtershift.analysis.histograms import distributions
from filtershift.analysis.results import load_results
from filtershift.cli import main
from filtershift.store.files import current_umask
from filtershift.zoo.build import build_zoo
from filtershift.zoo.plan import plan_zoo

ZOO_MODELS = ("vgg-natural-w8-s0", "vgg-natural-w8-s1", "resnet-natural-w8-s0", "unet-medical-w8-s0", "vgg-medical-w8-s0",
              "srnet-natural-w8-s0")
COPY = "vgg-natural-w8-s0-copy"  # the same weights as vgg-natural-w8-s0, saved as safetensors
ONNX = "vgg-natural-w8-s1-onnx"  # vgg-natural-w8-s1 exported to ONNX, BatchNorm folded into its convs


def _write_conversions(root: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """An exact copy in another format and an ONNX export with BatchNorm folded; their manifest rows."""
    import onnx
    import torch
    from safetensors.torch import save_file

    from filtershift.readers.arch import build_arch

    rows = []
    src = manifest.set_index("name").loc["vgg-natural-w8-s0"]
    state = torch.load(root / src["path"], weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, root / "vgg" / f"{COPY}.safetensors")
    rows.append(dict(src, name=COPY, path=f"vgg/{COPY}.safetensors", format="safetensors"))
    src = manifest.set_index("name").loc["vgg-natural-w8-s1"]
    module = build_arch(src["arch"])
    checkpoint = torch.load(root / src["path"], weights_only=True)
    module.load_state_dict(checkpoint.get("state_dict") or checkpoint["model_state_dict"])
    module.eval()
    with warnings.catch_warnings():  # the TorchScript-based exporter warns it is deprecated (no onnxscript here)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.randn(1, 3, 16, 16),), root / "vgg" / f"{ONNX}.onnx", dynamo=False, opset_version=17)
    ops = {n.op_type for n in onnx.load(root / "vgg" / f"{ONNX}.onnx").graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops  # BatchNorm really folded: the weights differ
    rows.append(dict(src, name=ONNX, path=f"vgg/{ONNX}.onnx", format="onnx", arch=""))
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def zoo_db(tmp_path_factory) -> Path:
    """A six-model zoo (short training) with an exact copy and an ONNX conversion, extracted and
    analysed by model and family (scaled), by model with layer weighting, and raw."""
    from filtershift.extraction.extract import plan_extraction, run_extraction
    from filtershift.extraction.manifest import read_manifest

    root = tmp_path_factory.mktemp("nearest-zoo")
    specs = tuple(replace(s, steps=30) for s in plan_zoo("tiny") if s.name in ZOO_MODELS)
    with dask.config.set(scheduler="synchronous"):
        result = build_zoo(root / "zoo", "tiny", specs=specs)
        manifest = result.manifest.reset_index(drop=True)
        extra = _write_conversions(root / "zoo", manifest)
        pd.concat([manifest, extra[manifest.columns]]).to_csv(root / "zoo" / "all.csv", index=False)
        db = root / "db"
        report = run_extraction(plan_extraction(read_manifest(root / "zoo" / "all.csv"), db), show_progress=False)
    assert report.n_failed == 0
    for extra_args in (["--by", "model,family"], ["--by", "model", "--weighting", "layers", "--name", "layers"],
                       ["--by", "model", "--scaling", "raw", "--name", "raw"],
                       ["--by", "model", "--where", "depth_decile <= 4", "--name", "early"]):
        assert main(["analyze", str(db), "--threads", "--no-progress", *extra_args]) == 0
    return db


def nearest_json(capsys, db: Path, *args: str) -> dict:
    capsys.readouterr()
    assert main(["nearest", str(db), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def pair_d(results, name: str) -> dict[str, float]:
    """D from ``name`` to every other model, from the analysis's model-pair table."""
    pairs = results.model_pairs()
    mine = pairs[(pairs["name_a"] == name) | (pairs["name_b"] == name)]
    return {(b if a == name else a): d for a, b, d in zip(mine["name_a"], mine["name_b"], mine["d"])}


@pytest.mark.parametrize("analysis", ["scaled", "layers", "raw"])
def test_model_query_gives_the_d_of_the_model_pair_table(zoo_db, capsys, analysis):
    results = load_results(zoo_db, analysis)
    for name in results.models()["name"]:
        out = nearest_json(capsys, zoo_db, "--name", analysis, "--model", name, "--top", "100")
        got = {n["name"]: n["d"] for n in out["neighbours"]}
        expected = pair_d(results, name)
        assert set(got) == set(expected)  # every other model, the query itself left out
        np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-12, atol=1e-15)
        assert out["clipped"] == 0.0 and out["query"]["model"] == name


def test_group_query_gives_the_d_of_the_analysis_group_histograms(zoo_db, capsys):
    results = load_results(zoo_db, "scaled")
    by_model, by_family = results.histograms("model"), results.histograms("family")
    q = results.pca.explained_variance_ratio
    name = "resnet-natural-w8-s0"
    p = by_model.probabilities[by_model.labels.index(name)]
    out = nearest_json(capsys, zoo_db, "--model", name, "--by", "family")
    got = {n["name"]: n["d"] for n in out["neighbours"]}
    assert set(got) == set(by_family.labels)
    for label, probabilities, n_models in zip(by_family.labels, by_family.probabilities, by_family.n_models):
        assert got[label] == pytest.approx(shift(p, probabilities, q), rel=1e-12)
        assert next(n for n in out["neighbours"] if n["name"] == label)["n_models"] == n_models
    assert all(not n["copy"] for n in out["neighbours"])


def test_per_decile_d_and_components(zoo_db, capsys):
    results = load_results(zoo_db, "scaled")
    model_id, _, decile_counts = results.model_histograms()
    models = results.models().set_index("name")
    q, edges = results.pca.explained_variance_ratio, results.bins.edges
    a, b = "vgg-natural-w8-s1", "vgg-medical-w8-s0"
    out = nearest_json(capsys, zoo_db, "--model", a, "--top", "100")
    row = next(n for n in out["neighbours"] if n["name"] == b)
    ca = decile_counts[list(model_id).index(models.loc[a, "model_id"])]
    cb = decile_counts[list(model_id).index(models.loc[b, "model_id"])]
    for k in range(10):
        if ca[k].sum() and cb[k].sum():
            assert row["d_decile"][k] == pytest.approx(shift(distributions(ca[k], edges), distributions(cb[k], edges), q), rel=1e-12)
        else:
            assert row["d_decile"][k] is None
    assert sum(row["d_components"]) == pytest.approx(row["d"], rel=1e-12)
    order = np.argsort(row["d_components"])[::-1][:3] + 1
    assert row["top_components"] == order.tolist()


@pytest.mark.parametrize("query, conversion", [
    ("resnet-natural-w8-s0", "resnet-natural-w8-s0-fp16"), ("resnet-natural-w8-s0-fp16", "resnet-natural-w8-s0"),
    ("unet-medical-w8-s0", "unet-medical-w8-s0-fp16"), ("vgg-natural-w8-s1", ONNX), (ONNX, "vgg-natural-w8-s1"),
])
def test_a_conversion_is_the_nearest_non_copy_neighbour(zoo_db, capsys, query, conversion):
    out = nearest_json(capsys, zoo_db, "--model", query)
    ranked = [n for n in out["neighbours"] if not n["copy"]]
    assert ranked[0]["name"] == conversion and ranked[0]["rank"] == 1
    checksums = load_results(zoo_db, "scaled").models().set_index("name")["rows_sha256"]
    assert checksums[query] != checksums[conversion]  # a conversion, not a copy: its weights differ
    assert ranked[0]["d"] < 0.2 * ranked[1]["d"]  # (scaled: BatchNorm folding only rescales filters, D may be 0)


def test_exact_copies_are_flagged_and_not_ranked(zoo_db, capsys):
    out = nearest_json(capsys, zoo_db, "--model", "vgg-natural-w8-s0", "--top", "3")
    copies = [n for n in out["neighbours"] if n["copy"]]
    assert [(c["name"], c["rank"], c["d"]) for c in copies] == [(COPY, None, 0.0)]
    assert [n["rank"] for n in out["neighbours"] if not n["copy"]] == [1, 2, 3]
    capsys.readouterr()
    assert main(["nearest", str(zoo_db), "--model", "vgg-natural-w8-s0", "--top", "3"]) == 0
    text = capsys.readouterr().out
    table, apart = text.split("exact weight copies")
    assert COPY not in table and COPY in apart
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["1", "2", "3"]


def test_checkpoint_query_gives_the_model_query(zoo_db, capsys):
    results = load_results(zoo_db, "scaled")
    models = results.models().set_index("name")
    for name in ("resnet-natural-w8-s0", ONNX):
        by_model = nearest_json(capsys, zoo_db, "--model", name, "--top", "100")
        by_file = nearest_json(capsys, zoo_db, "--checkpoint", models.loc[name, "path"], "--top", "100")
        expected = {n["name"]: n for n in by_model["neighbours"]}
        got = {n["name"]: n for n in by_file["neighbours"]}
        assert got.pop(name)["copy"] is True  # the file itself is in the database
        assert set(got) == set(expected)
        for k, n in expected.items():
            assert got[k]["d"] == pytest.approx(n["d"], rel=1e-12, abs=1e-15)
            np.testing.assert_allclose(np.array(got[k]["d_decile"], dtype=float), np.array(n["d_decile"], dtype=float), rtol=1e-12, equal_nan=True)
        assert by_file["clipped"] == 0.0
        assert by_file["query"]["rows_sha256"] == models.loc[name, "rows_sha256"]
        assert by_file["query"]["n_filters"] == models.loc[name, "n_filters"]


def test_checkpoint_query_of_a_where_restricted_analysis_reads_the_same_layers(zoo_db, capsys):
    models = load_results(zoo_db, "early").models().set_index("name")
    name = "unet-medical-w8-s0"
    by_model = nearest_json(capsys, zoo_db, "--name", "early", "--model", name, "--top", "100")
    by_file = nearest_json(capsys, zoo_db, "--name", "early", "--checkpoint", models.loc[name, "path"], "--top", "100")
    assert by_file["query"]["where"] == by_model["query"]["where"] == "depth_decile <= 4"
    assert by_file["query"]["n_filters"] == models.loc[name, "n_filters"]  # the analysed layers only
    got = {n["name"]: n["d"] for n in by_file["neighbours"] if n["name"] != name}
    expected = {n["name"]: n["d"] for n in by_model["neighbours"]}
    assert set(got) == set(expected)
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-12, atol=1e-15)


def test_coefficients_outside_the_stored_range_are_clipped_and_reported(zoo_db, capsys, tmp_path):
    import torch

    from filtershift.analysis.pca import prepare

    results = load_results(zoo_db, "raw")
    row = results.models().set_index("name").loc["vgg-medical-w8-s0"]
    state = torch.load(row["path"], weights_only=True)
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = state[key] * 50.0  # outlier weights: far beyond every analysed coefficient
    torch.save(state, tmp_path / "outlier.pt")
    out = nearest_json(capsys, zoo_db, "--name", "raw", "--checkpoint", str(tmp_path / "outlier.pt"), "--arch", row["arch"])
    w = state[key].numpy().reshape(-1, 9)
    c = results.pca.project(prepare(w, "raw"))
    lo, hi = results.bins.edges[[0, -1]]
    expected = np.count_nonzero((c < lo) | (c > hi)) / (row["n_filters"] * 9)
    assert expected > 0 and out["clipped"] == pytest.approx(expected, rel=1e-12)
    assert out["query"]["clipped"] == out["clipped"] and not any(n["copy"] for n in out["neighbours"])
    capsys.readouterr()
    assert main(["nearest", str(zoo_db), "--name", "raw", "--checkpoint", str(tmp_path / "outlier.pt"), "--arch", row["arch"]]) == 0
    assert "outside the analysis's bins" in capsys.readouterr().out


def test_json_schema_top_and_where(zoo_db, capsys):
    out = nearest_json(capsys, zoo_db, "--model", "vgg-medical-w8-s0", "--top", "4", "--where", "family == 'vgg'")
    assert set(out) == {"query", "results", "by", "weighting", "neighbours", "clipped"}
    assert out["results"] == "scaled" and out["by"] == "model" and out["weighting"] == "filters"
    assert {"model", "checkpoint", "n_layers", "n_filters", "rows_sha256", "clipped"} <= set(out["query"])
    ds = [n["d"] for n in out["neighbours"]]
    assert ds == sorted(ds)
    for n in out["neighbours"]:
        assert {"rank", "name", "d", "copy", "task", "data_type", "dataset", "family", "d_decile", "d_components", "top_components"} <= set(n)
        assert n["family"] == "vgg" and len(n["d_decile"]) == 10 and len(n["d_components"]) == 9
    assert [n["rank"] for n in out["neighbours"] if not n["copy"]] == [1, 2, 3, 4]


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model"], "'no-such-model' is not one of the analysed models"),
    (["--model", "vgg-natural"], "Similar names: vgg-natural-w8-s0"),
    (["--model", "vgg-natural-w8-s0", "--by", "depth_decile"], "--by depth_decile: not a column of the analysed models"),
    (["--model", "vgg-natural-w8-s0", "--where", "colour == 1"], "--where \"colour == 1\": no column 'colour'"),
    (["--model", "vgg-natural-w8-s0", "--where", "family == 'none'"], "leaves no model to compare with"),
    (["--model", "vgg-natural-w8-s0", "--name", "missing"], "holds no complete analysis"),
    (["--checkpoint", "missing.pt"], "missing.pt: no such file"),
    (["--model", "vgg-natural-w8-s0", "--top", "0"], "--top must be at least 1"),
])
def test_bad_queries_are_named_with_the_fix(zoo_db, capsys, args, message):
    capsys.readouterr()
    assert main(["nearest", str(zoo_db), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("error:") == 1


def test_an_unreadable_checkpoint_is_named(zoo_db, capsys, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main(["nearest", str(zoo_db), "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "cannot be queried (failed)" in err


# --- filtershift card -------------------------------------------------------------------------------


def card_json(capsys, db: Path, *args: str) -> dict:
    capsys.readouterr()
    assert main(["card", str(db), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_card_places_layers_among_the_same_decile(zoo_db, capsys):
    results = load_results(zoo_db, "scaled")
    stats = results.layer_stats()
    name = "vgg-medical-w8-s0"
    model_id = int(results.models().set_index("name").loc[name, "model_id"])
    card = card_json(capsys, zoo_db, "--model", name)
    mine = stats[stats["model_id"] == model_id]
    assert [r["name"] for r in card["layers"]] == mine["name"].tolist()
    for row, (_, layer) in zip(card["layers"], mine.iterrows()):
        same = stats[stats["depth_decile"] == layer["depth_decile"]]
        for stat in ("mean_range", "sparsity", "variance_entropy"):
            below, equal = (same[stat] < layer[stat]).sum(), (same[stat] == layer[stat]).sum()
            assert row[f"{stat}_pct"] == pytest.approx(100 * (below + equal / 2) / len(same))
        assert row["degenerate"] == layer["degenerate"] and row["n_reference"] == len(same)
        assert row["degenerate_share"] == pytest.approx(same["degenerate"].mean())


def test_card_d_to_own_groups_and_neighbours(zoo_db, capsys):
    name = "resnet-natural-w8-s0"
    card = card_json(capsys, zoo_db, "--model", name, "--top", "3")
    groups = {g["column"]: g for g in card["groups"]}
    assert set(groups) == {"task", "data_type", "dataset", "family"}
    by_family = {n["name"]: n for n in nearest_json(capsys, zoo_db, "--model", name, "--by", "family")["neighbours"]}
    assert groups["family"]["own_group"] == "resnet"
    assert groups["family"]["d_own"] == pytest.approx(by_family["resnet"]["d"], rel=1e-12)
    assert groups["family"]["own_rank"] == by_family["resnet"]["rank"]
    nearest = nearest_json(capsys, zoo_db, "--model", name, "--top", "3")["neighbours"]
    assert card["neighbours"] == nearest


def test_card_of_a_checkpoint_matches_the_analysed_model(zoo_db, capsys, tmp_path):
    results = load_results(zoo_db, "scaled")
    row = results.models().set_index("name").loc["unet-medical-w8-s0"]
    by_model = card_json(capsys, zoo_db, "--model", "unet-medical-w8-s0")
    out = tmp_path / "card" / "unet.html"
    out.parent.mkdir()
    by_file = card_json(capsys, zoo_db, "--checkpoint", row["path"], "--html", str(out))
    assert len(by_file["layers"]) == len(by_model["layers"]) == row["n_layers"]
    for a, b in zip(by_file["layers"], by_model["layers"]):
        assert a["name"] == b["name"] and a["depth_decile"] == b["depth_decile"] and a["degenerate"] == b["degenerate"]
        for stat in ("mean_range", "sparsity", "variance_entropy"):
            assert a[stat] == pytest.approx(b[stat], rel=1e-6, abs=1e-9)
    assert all(g["own_group"] is None and g["nearest_group"] for g in by_file["groups"])  # a file has no metadata
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "unet-medical-w8-s0" in page and page.count("<table") == 4
    assert (out.stat().st_mode & 0o777) == 0o666 & ~current_umask()
    capsys.readouterr()
    assert main(["card", str(zoo_db), "--model", "unet-medical-w8-s0"]) == 0
    text = capsys.readouterr().out
    assert "percentile among the analysed layers" in text and "D to its own groups" in text and "nearest models" in text
