"""The analysis results on disk: the one module that writes or reads ``DB/results/NAME/``.

Everything a figure or report needs is here, small and labelled; plotting code reads only these
files (through :func:`load_results`), never the filter store.

Layout of ``DB/results/NAME/`` (``<by>`` is a grouping name as given to ``--by``, e.g. ``task``,
``depth_decile``, ``model`` or a cross ``task+data_type``)::

    pca.json                 the PCA (docs/design.md §3): mean [9], components [9][9] (rows = v_i, sign:
                             largest-magnitude entry positive), explained_variance [9],
                             explained_variance_ratio [9] (= q_i), n_filters (filters fitted on),
                             scaling ("scaled"|"raw"), method ("covariance"|"incremental"),
                             fit_on (expression or null), n_analysed (filters analysed).
    bins.json                the 1-D coefficient bins shared by everything: edges [71] (70 uniform
                             bins over [min, max] of all coefficients of the analysed filters),
                             min, max, n_bins; and the 2-D bins: edges_2d [9][n_bins_2d + 1] — per
                             component k uniform over [min, max] of c_k (so each axis of a phenotype
                             plot uses its own range), n_bins_2d, pairs [[i, j], ...] (component
                             pairs of the 2-D histograms, 0-based; default the 8 consecutive pairs
                             (0,1), (1,2), ..., (7,8); ``--pairs all``: all 36).
    layer_histograms.npz     layer_id (L,) int64; counts (L, 9, 70) int64 — coefficient counts of
                             every analysed layer, component, bin. Every group histogram is a sum
                             of these (so weighting and bootstrap need no new pass).
    model_histograms.npz     model_id (M,) int64; counts (M, 9, 70) int64; and decile_counts
                             (M, 10, 9, 70) int64 — per model and per model x depth decile.
    hist_<by>.npz            labels (G,) str; counts (G, 9, 70) float64 — the pooled coefficient
                             counts (or, for --weighting layers|models, the mean of the members'
                             normalised histograms, scaled to the group's filter count);
                             probabilities (G, 9, 70) float64 — the distributions D is computed
                             from (density, empty bins -> float32 eps, normalised to sum 1 per
                             component); edges (71,); n_filters (G,) int64; n_models (G,) int64.
    shift_<by>.csv           the square D matrix, group labels as header and index (first column
                             "group").
    shift_<by>_ci.csv        only with --bootstrap B: long table group_a, group_b, d, low, high,
                             std (2.5 / 97.5 percentiles of D over B resamples of the models
                             within each group).
    counts_<by>.csv          group, n_models, n_layers, n_filters (paper Figs. 10-11).
    hist2d_<by>.npz          labels (G,) str; pairs (P, 2) int64; counts (G, P, B2, B2) int64 —
                             joint counts of component pair (i, j): axis 2 bins c_i over
                             edges[i], axis 3 bins c_j over edges[j]; edges (9, B2 + 1). ``hist2d_all.npz`` holds the one
                             group "all" (every analysed filter). Only written for groupings with
                             at most ``max_groups_2d`` groups (see provenance) — not for ``model``
                             on a large DB.
    layer_stats.parquet      one row per analysed layer: layer_id, model_id, name, conv_index,
                             depth, depth_decile, n_filters, mean_range (mean over its filters of
                             max - min), max_abs, sparsity, variance_entropy, threshold (TH(n)),
                             degenerate (bool).
    model_depth_range.parquet  one row per (model_id, depth_decile) present: n_layers, n_filters,
                             mean_range (mean of the layers' mean ranges, the paper's Fig. 6) and
                             mean_range_filters (mean over all the filters in that decile).
    model_pairs.parquet      one row per unordered pair of analysed models: model_a, model_b,
                             name_a, name_b, d, same_family, same_task, same_data_type,
                             same_dataset (bool; False where either side is missing).
    models.parquet           the analysed models: model_id, name, task, data_type, dataset,
                             family, n_layers, n_filters (as analysed) and any extra columns.
    dataset.zarr             all of the above but the parquet tables, as one labelled xarray Dataset
                             in a Zarr v3 group (``xarray.open_zarr``); names in
                             :mod:`filtershift.analysis.dataset`. Written after the other files.
    provenance.json          parameters (every CLI argument), database {path, fingerprint, n_rows,
                             chunk_rows, n_models, n_layers}, versions {package: version}, timing
                             {pass name: seconds, total}, passes (the three reads of the filters
                             and what each computed), groupings [names], created (UTC ISO time);
                             with --basis also basis {name, created, database_fingerprint,
                             n_layers_read, n_filters_read, n_layers_reused, n_filters_reused,
                             n_clipped (read coefficients outside the basis's edges, put in the
                             edge bins), clipped (their share), layer_statistics, hist2d,
                             hist2d_not_written {grouping: why}} (docs/design.md §2, frozen basis).
                             A basis needs no extra files: reused layers' counts come from
                             layer_histograms.npz, their statistics from layer_stats.parquet, the
                             2-D counts from hist2d_<by>.npz (per group) and counts_<by>.csv.

Every file is written to a temporary name and renamed, and ``provenance.json`` is written last:
a results folder without it is incomplete. A run that fails in its reads of the filters (bad
weights, Ctrl-C, a lost worker) leaves the results stored under its name as they were. An
analysis holds ``DB/results/.NAME.lock`` from its first read to its last write, so a second one
under the same name fails at once instead of mixing its files with the first one's.

Other modules read the provenance through the accessors of :class:`Results`, never its JSON keys.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from filtershift.analysis.dataset import DATASET_STORE, write_dataset
from filtershift.analysis.types import ALL_GROUP, AnalysisOutput, Bins, GroupHistograms, GroupHistograms2D, PCAResult
from filtershift.errors import FiltershiftError
from filtershift.store import RESULTS_DIR
from filtershift.store.files import atomic_write, atomic_write_json, exclusive_lock

PCA_FILE = "pca.json"
BINS_FILE = "bins.json"
PROVENANCE_FILE = "provenance.json"
LAYER_HIST_FILE = "layer_histograms.npz"
MODEL_HIST_FILE = "model_histograms.npz"
LAYER_STATS_FILE = "layer_stats.parquet"
MODEL_DEPTH_RANGE_FILE = "model_depth_range.parquet"
MODEL_PAIRS_FILE = "model_pairs.parquet"
MODELS_FILE = "models.parquet"


class ResultsError(FiltershiftError, RuntimeError):
    """Missing or incomplete results; the message says how to produce them."""


def results_root(db_path: str | os.PathLike) -> Path:
    """``DB/results``: the analyses, each in its own folder, and the pipeline's log."""
    return Path(db_path) / RESULTS_DIR


def results_path(db_path: str | os.PathLike, name: str) -> Path:
    return results_root(db_path) / name


def shift_file(by: str) -> str:
    return f"shift_{by}.csv"


def shift_ci_file(by: str) -> str:
    return f"shift_{by}_ci.csv"


def hist_file(by: str) -> str:
    return f"hist_{by}.npz"


def hist2d_file(by: str) -> str:
    return f"hist2d_{by}.npz"


def counts_file(by: str) -> str:
    return f"counts_{by}.csv"


@dataclass(frozen=True)
class Results:
    """An analysis on disk. Small parts are loaded eagerly; tables and histograms on request."""

    path: Path
    pca: PCAResult
    bins: Bins
    provenance: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def groupings(self) -> tuple[str, ...]:
        return tuple(self.provenance.get("groupings", ()))

    @property
    def groupings_2d(self) -> tuple[str, ...]:
        """The groupings with 2-D histograms, ``all`` first."""
        return tuple(self.provenance.get("groupings_2d", (ALL_GROUP,)))

    @property
    def parameters(self) -> dict[str, Any]:
        """Every setting the analysis ran with (the command's arguments or the job's analysis)."""
        return dict(self.provenance.get("parameters", {}))

    @property
    def weighting(self) -> str:
        return self.parameters.get("weighting", "filters")

    @property
    def subset(self) -> str | None:
        """The expression that chose the filters the PCA was fitted on (``fit_on``, else ``where``)."""
        return self.parameters.get("fit_on") or self.parameters.get("where")

    @property
    def job_analysis(self) -> dict[str, Any] | None:
        """The job spec's analysis settings these results were made with (``filtershift run``)."""
        return self.parameters.get("job_analysis")

    @property
    def basis(self) -> str | None:
        """The analysis whose PCA and bins these results reuse (``--basis``), or None."""
        return (self.provenance.get("basis") or {}).get("name")

    @property
    def basis_info(self) -> dict[str, Any]:
        """On a basis: what was read and reused, the clipped share, the 2-D histograms not written."""
        return dict(self.provenance.get("basis") or {})

    @property
    def database_fingerprint(self) -> str | None:
        """The fingerprint of the database state the results were computed from."""
        return self.provenance.get("database", {}).get("fingerprint")

    @property
    def analysed(self) -> dict[str, int]:
        """What was read: n_filters, n_layers, n_models, n_fit, n_chunks_read, n_fit_chunks_read."""
        return dict(self.provenance.get("analysed", {}))

    @property
    def created(self) -> str:
        """When the results were written (UTC, ISO 8601)."""
        return str(self.provenance.get("created", ""))

    def sections(self) -> dict[str, dict[str, Any]]:
        """The provenance's tables for display: parameters, basis (if any), database, analysed, timing, versions."""
        keys = ("parameters", "basis", "database", "analysed", "timing", "versions")
        return {k: self.provenance[k] for k in keys if self.provenance.get(k)}

    def shift(self, by: str) -> pd.DataFrame:
        """The D matrix of ``by``: a square DataFrame indexed and labelled by group."""
        df = pd.read_csv(self._file(shift_file(by)), index_col=0, dtype={"group": str})
        df.index = df.index.astype(str)
        df.index.name = "group"
        return df

    def shift_ci(self, by: str) -> pd.DataFrame | None:
        """Bootstrap CIs of ``by`` (long table), or ``None`` when the analysis ran without them."""
        path = self.path / shift_ci_file(by)
        if not path.exists():
            return None
        return pd.read_csv(path, dtype={"group_a": str, "group_b": str})

    def counts(self, by: str) -> pd.DataFrame:
        return pd.read_csv(self._file(counts_file(by)), dtype={"group": str})

    def histograms(self, by: str) -> GroupHistograms:
        with np.load(self._file(hist_file(by)), allow_pickle=False) as z:
            return GroupHistograms(
                by=by,
                labels=tuple(str(s) for s in z["labels"]),
                counts=z["counts"],
                probabilities=z["probabilities"],
                edges=z["edges"],
                n_filters=z["n_filters"],
                n_models=z["n_models"],
            )

    def histograms_2d(self, by: str = ALL_GROUP) -> GroupHistograms2D | None:
        """2-D histograms of ``by`` (``"all"``: every analysed filter), or ``None`` when not written."""
        path = self.path / hist2d_file(by)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return GroupHistograms2D(
                by=by,
                labels=tuple(str(s) for s in z["labels"]),
                pairs=tuple(tuple(int(i) for i in p) for p in z["pairs"]),
                counts=z["counts"],
                edges=z["edges"],
            )

    def layer_histograms(self) -> tuple[np.ndarray, np.ndarray]:
        """``(layer_id (L,), counts (L, 9, n_bins))``."""
        with np.load(self._file(LAYER_HIST_FILE), allow_pickle=False) as z:
            return z["layer_id"], z["counts"]

    def model_histograms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(model_id (M,), counts (M, 9, n_bins), decile_counts (M, 10, 9, n_bins))``."""
        with np.load(self._file(MODEL_HIST_FILE), allow_pickle=False) as z:
            return z["model_id"], z["counts"], z["decile_counts"]

    def layer_stats(self) -> pd.DataFrame:
        return pd.read_parquet(self._file(LAYER_STATS_FILE))

    def model_depth_range(self) -> pd.DataFrame:
        return pd.read_parquet(self._file(MODEL_DEPTH_RANGE_FILE))

    def model_pairs(self) -> pd.DataFrame:
        return pd.read_parquet(self._file(MODEL_PAIRS_FILE))

    def models(self) -> pd.DataFrame:
        return pd.read_parquet(self._file(MODELS_FILE))

    def dataset(self):
        """Everything above as one labelled ``xarray.Dataset`` (variables and dimensions:
        :mod:`filtershift.analysis.dataset`); the same is stored as ``dataset.zarr``, which
        ``xarray.open_zarr(results.path / "dataset.zarr")`` opens directly.

        Examples
        --------
        >>> ds = results.dataset()                                       # doctest: +SKIP
        >>> ds.shift_task.sel(task_group_a="classification")             # doctest: +SKIP
        """
        from filtershift.analysis.dataset import results_dataset

        return results_dataset(self)

    def _file(self, name: str) -> Path:
        path = self.path / name
        if not path.exists():
            raise ResultsError(
                f"{path} is missing: this analysis did not produce it (groupings: "
                f"{', '.join(self.groupings) or 'none'}). Rerun `filtershift analyze` with the grouping you need."
            )
        return path


def load_results(db_path: str | os.PathLike, name: str) -> Results:
    """Open the results ``DB/results/NAME``; raises :class:`ResultsError` if absent or incomplete."""
    path = results_path(db_path, name)
    if not (path / PROVENANCE_FILE).exists():
        raise ResultsError(
            f"{path} holds no complete analysis ({PROVENANCE_FILE} is missing). "
            f"Run `filtershift analyze {db_path} --name {name}`."
        )
    return Results(
        path=path,
        pca=PCAResult.from_json(_read_json(path / PCA_FILE)),
        bins=Bins.from_json(_read_json(path / BINS_FILE)),
        provenance=_read_json(path / PROVENANCE_FILE),
    )


def find_results(db_path: str | os.PathLike, name: str) -> Results | None:
    """The complete results ``DB/results/NAME``, or ``None`` when there are none (or unreadable ones)."""
    try:
        return load_results(db_path, name)
    except (ResultsError, OSError, ValueError, KeyError):
        return None


def complete_analyses(db_path: str | os.PathLike) -> list[str]:
    """The names of the complete analyses under ``DB/results``, sorted."""
    root = results_root(db_path)
    return sorted(p.parent.name for p in root.glob(f"*/{PROVENANCE_FILE}")) if root.is_dir() else []


def stale_analyses(db_path: str | os.PathLike) -> list[str]:
    """A problem line for every analysis under ``DB/results`` that was computed from another state
    of the database than the present one (read from each provenance's fingerprint alone)."""
    from filtershift.store import open_database
    from filtershift.store.fingerprint import fingerprint

    names = complete_analyses(db_path)
    if not names:
        return []
    current = fingerprint(open_database(db_path))
    problems = []
    for name in names:
        try:
            recorded = _read_json(results_path(db_path, name) / PROVENANCE_FILE).get("database", {}).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded != current:
            problems.append(f"results '{name}' were computed from another state of the database; "
                            f"rerun `filtershift analyze {db_path} --name {name}`")
    return problems


@contextlib.contextmanager
def results_lock(db_path: str | os.PathLike, name: str) -> Iterator[None]:
    """Hold ``DB/results/.NAME.lock`` for a whole analysis: a second analysis under the same name
    fails at once (so results are never a mix of two runs); other names run side by side."""
    root = results_root(db_path)
    busy = (f"{results_path(db_path, name)} is being computed by another `filtershift analyze`; wait for it to finish "
            "or give this analysis another --name.")
    with exclusive_lock(root / f".{name}.lock", busy, ResultsError):
        yield


def write_analysis(db_path: str | os.PathLike, name: str, output: AnalysisOutput) -> Path:
    """Write ``output`` to ``DB/results/NAME/`` (every file atomically, ``provenance.json`` last);
    returns the folder."""
    out = results_path(db_path, name)
    out.mkdir(parents=True, exist_ok=True)
    (out / PROVENANCE_FILE).unlink(missing_ok=True)  # incomplete until rewritten at the end
    write_json(out / PCA_FILE, output.pca.to_json())
    write_json(out / BINS_FILE, output.bins.to_json())
    write_npz(out / LAYER_HIST_FILE, compressed=True, layer_id=output.layer_ids, counts=output.layer_counts)
    write_npz(out / MODEL_HIST_FILE, compressed=True, model_id=output.model_ids, counts=output.model_counts,
              decile_counts=output.decile_counts)
    for g in output.groupings:
        by = g.histograms.by
        write_group_histograms(out, g.histograms)
        write_csv(out / shift_file(by), g.shift, index=True)
        write_csv(out / counts_file(by), g.counts)
        if g.shift_ci is not None:
            write_csv(out / shift_ci_file(by), g.shift_ci)
    for h in output.histograms_2d:
        write_group_histograms_2d(out, h)
    write_parquet(out / LAYER_STATS_FILE, output.layer_stats)
    write_parquet(out / MODEL_DEPTH_RANGE_FILE, output.model_depth_range)
    write_parquet(out / MODEL_PAIRS_FILE, output.model_pairs)
    write_parquet(out / MODELS_FILE, output.models)
    written = Results(path=out, pca=output.pca, bins=output.bins, provenance=output.provenance)
    write_dataset(written.dataset(), out / DATASET_STORE)  # built from the files just written
    write_json(out / PROVENANCE_FILE, output.provenance)
    return out


# --------------------------------------------------------------------------------------------
# Writers (atomic: temporary file + rename, mode from the umask; see filtershift/store/files.py)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write_json(target: Path, obj: dict[str, Any]) -> None:
    atomic_write_json(target, obj)


def write_npz(target: Path, compressed: bool = False, **arrays: np.ndarray) -> None:
    save = np.savez_compressed if compressed else np.savez

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            save(fh, **arrays)

    atomic_write(target, write)


def write_csv(target: Path, df: pd.DataFrame, index: bool = False) -> None:
    atomic_write(target, lambda tmp: df.to_csv(tmp, index=index))


def write_parquet(target: Path, df: pd.DataFrame) -> None:
    atomic_write(target, lambda tmp: df.to_parquet(tmp, index=False))


def write_group_histograms(folder: Path, h: GroupHistograms) -> None:
    write_npz(
        folder / hist_file(h.by),
        labels=np.asarray(h.labels, dtype=str),
        counts=h.counts,
        probabilities=h.probabilities,
        edges=h.edges,
        n_filters=np.asarray(h.n_filters, dtype=np.int64),
        n_models=np.asarray(h.n_models, dtype=np.int64),
    )


def write_group_histograms_2d(folder: Path, h: GroupHistograms2D) -> None:
    write_npz(
        folder / hist2d_file(h.by),
        compressed=True,
        labels=np.asarray(h.labels, dtype=str),
        pairs=np.asarray(h.pairs, dtype=np.int64).reshape(-1, 2),
        counts=h.counts,
        edges=h.edges,
    )


__all__ = [
    "ALL_GROUP", "PCAResult", "Bins", "GroupHistograms", "GroupHistograms2D", "Results", "ResultsError",
    "complete_analyses", "find_results", "load_results", "results_lock", "stale_analyses", "results_path", "results_root", "write_analysis",
]
