"""The settings of one analysis: a frozen value built by the command line and by the job spec alike.

Each field is one option, under the same name in a job spec (``analyses[i].<field>``) and on the
command line (``--<field>`` with ``-`` for ``_``); its help, choices and metavar are in the field's
metadata, so :func:`add_arguments` and the job-spec checker are generated from this one list. Pure.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCALINGS = ("scaled", "raw")
PCA_METHODS = ("covariance", "incremental")
DEFAULT_PCA_METHOD = "covariance"  # measured fastest: benchmarks/bench_pca.py, docs/design.md §5
WEIGHTINGS = ("filters", "layers", "models")
PAIR_SETS = ("consecutive", "all")
DEFAULT_BY = ("task", "data_type", "depth_decile")
N_BINS_2D = 64
MAX_GROUPS_2D = 64


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None, metavar: str | None = None, minimum: int = 0) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar, "minimum": minimum})


@dataclass(frozen=True)
class AnalysisSettings:
    """What ``filtershift analyze`` computes; ``name`` is the results folder (default: the scaling)."""

    name: str | None = _option(None, "results name, the folder DB/results/NAME (default: the scaling, e.g. 'scaled')")
    scaling: str = _option("scaled", "divide each filter by its max |w| (scaled) or not (raw)", SCALINGS)
    by: tuple[str, ...] = _option(
        DEFAULT_BY, "groupings: 'model' or any layer/model column, crossed with '+' (e.g. task,data_type,family,model,"
        "depth_decile,conv_index,task+data_type)", metavar="BY[,BY...]")
    where: str | None = _option(None, "analyse only the layers matching this pandas expression over layer and model columns, "
                                "e.g. \"data_type == 'natural'\" or \"depth_decile == 0\"", metavar="EXPR")
    fit_on: str | None = _option(None, "fit the PCA on the layers matching EXPR instead of on the analysed ones", metavar="EXPR")
    pca: str = _option(DEFAULT_PCA_METHOD, "exact one-pass covariance (measured fastest) or dask-ml IncrementalPCA", PCA_METHODS)
    weighting: str = _option("filters", "pool a group's filters (the paper's), or average its layers' / models' distributions", WEIGHTINGS)
    bootstrap: int = _option(0, "B resamples of models within groups for confidence intervals of D (0: off)", metavar="B")
    seed: int = _option(0, "seed of the bootstrap")
    pairs: str = _option("consecutive", "component pairs of the 2-D histograms: (i, i+1) or all 36", PAIR_SETS)
    bins_2d: int = _option(N_BINS_2D, "bins per axis of the 2-D histograms", metavar="N", minimum=1)
    max_groups_2d: int = _option(MAX_GROUPS_2D, "2-D histograms only for groupings with at most this many groups", metavar="G")
    basis: str | None = _option(None, "reuse the PCA and bins of the analysis DB/results/RESULTS (same --scaling, --where, "
                                "--fit-on, --pairs, --bins-2d): only layers that analysis did not cover are read, the "
                                "others' histograms and statistics come from it", metavar="RESULTS")

    def __post_init__(self) -> None:
        by = self.by.split(",") if isinstance(self.by, str) else self.by
        names: list[str] = []
        for b in by:
            if b.strip() and b.strip() not in names:
                names.append(b.strip())
        object.__setattr__(self, "by", tuple(names))

    @property
    def results_name(self) -> str:
        return self.name or self.scaling

    def as_dict(self) -> dict[str, Any]:
        """Plain data (recorded with the results, to tell when they are current)."""
        return dict(asdict(self), by=list(self.by))


def invalid(settings: AnalysisSettings) -> str | None:
    """What is wrong with ``settings`` (a choice not allowed, an integer below its minimum), or None."""
    for f in options():
        value, meta, flag = getattr(settings, f.name), f.metadata, "--" + f.name.replace("_", "-")
        if meta["choices"] and value not in meta["choices"]:
            return f"{flag} must be one of {', '.join(meta['choices'])}, got {value!r}"
        if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < meta["minimum"]):
            return f"{flag} must be an integer >= {meta['minimum']}, got {value!r}"
    return None


def options() -> tuple:
    """The fields of :class:`AnalysisSettings`, in order: one per option."""
    return fields(AnalysisSettings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One command-line option per settings field (``--fit-on`` for ``fit_on``)."""
    for f in options():
        meta = f.metadata
        kind = int if f.type == "int" else str
        default = ",".join(f.default) if f.name == "by" else f.default
        shown = "" if default is None else " (default %(default)s)"
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=default,
                            choices=meta["choices"], metavar=meta["metavar"], help=meta["help"] + shown)


def from_args(args: argparse.Namespace) -> AnalysisSettings:
    return AnalysisSettings(**{f.name: getattr(args, f.name) for f in options()})
