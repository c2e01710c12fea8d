"""Job specs: the whole pipeline in one YAML file (``filtershift run JOB.yaml``), validated up front.

A job spec names where the checkpoints come from (a ``manifest`` or a ``zoo`` to build), the
database, the analyses and the figures. :func:`load_job` checks every key, type and input file
before any work starts, and resolves it into a frozen :class:`JobSpec`; errors name the file, the
key and the fix. Relative paths are relative to the working directory ``filtershift run`` starts
in (the ``base`` of :func:`load_job`) and are made absolute here, so that workers running in other
folders (an existing cluster, SLURM jobs) see the same files.

Example (``jobs/demo.yaml``)::

    name: demo
    zoo: {dir: runs/demo/zoo, size: small, seed: 0}
    db: runs/demo/demo.db
    analyses:
      - {name: scaled, scaling: scaled, by: [task, data_type, depth_decile]}
      - {name: raw, scaling: raw, by: [task]}
    figures: {out: runs/demo/figures, formats: [html]}

Pure: reads only the YAML file and checks that input files exist.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from filtershift.analysis.settings import AnalysisSettings, options
from filtershift.errors import FiltershiftError
from filtershift.figures.formats import FORMATS as FIGURE_FORMATS
from filtershift.zoo.plan import SIZES as ZOO_SIZES

TOP_KEYS = ("name", "manifest", "zoo", "db", "extract", "analyses", "figures")
ZOO_KEYS = ("dir", "size", "seed")
EXTRACT_KEYS = ("chunk_rows",)
ANALYSIS_KEYS = tuple(f.name for f in options())  # every option of `filtershift analyze`
FIGURE_KEYS = ("out", "formats", "analyses")
# One `filtershift analyze` into DB/results/<name>/: the same settings the command line builds.
AnalysisSpec = AnalysisSettings


class JobSpecError(FiltershiftError, ValueError):
    """A job spec that cannot run; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class ZooSpec:
    """Build the demo zoo into ``dir`` (``filtershift zoo DIR --size SIZE --seed SEED``)."""

    dir: Path
    size: str = "small"
    seed: int = 0

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.csv"


@dataclass(frozen=True)
class FigureSpec:
    """Render the figures of ``analyses`` (default: all) into ``out/<analysis>/``."""

    out: Path
    formats: tuple[str, ...] = ("html",)
    analyses: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobSpec:
    """A validated job: every path absolute, every default filled in."""

    name: str
    source: Path  # the YAML file
    db: Path
    manifest: Path | None = None
    zoo: ZooSpec | None = None
    chunk_rows: int | None = None
    analyses: tuple[AnalysisSpec, ...] = ()
    figures: FigureSpec | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def manifest_path(self) -> Path:
        """The manifest extraction reads: the given one, or the one the zoo stage writes."""
        return self.manifest if self.manifest is not None else self.zoo.manifest  # type: ignore[union-attr]

    def describe(self) -> str:
        source = f"zoo {self.zoo.size} (seed {self.zoo.seed}) in {self.zoo.dir}" if self.zoo else f"manifest {self.manifest}"
        lines = [f"job {self.name} ({self.source}): {source} -> {self.db}"]
        for a in self.analyses:
            lines.append(f"  analysis {a.name}: {a.scaling}, by {', '.join(a.by)}" + (f", where {a.where}" if a.where else "")
                         + (f", fit on {a.fit_on}" if a.fit_on else ""))
        if self.figures:
            lines.append(f"  figures ({', '.join(self.figures.formats)}) -> {self.figures.out}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Validation


class _Checker:
    """Type checks that name the file and the key path (``analyses[1].scaling``)."""

    def __init__(self, source: Path, base: Path):
        self.source, self.base = source, base

    def fail(self, key: str, message: str) -> JobSpecError:
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        return JobSpecError(where + message)

    def keys(self, mapping: Any, allowed: tuple[str, ...], key: str, required: tuple[str, ...] = ()) -> Mapping[str, Any]:
        if not isinstance(mapping, Mapping):
            raise self.fail(key, f"must be a mapping with keys {', '.join(allowed)}, got {_show(mapping)}")
        for k in mapping:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                here = f"{key}." if key else ""
                raise self.fail(f"{here}{k}", f"unknown key; {hint}known keys{' of ' + key if key else ''}: {', '.join(allowed)}")
        for k in required:
            if mapping.get(k) is None:
                raise self.fail(f"{key}.{k}" if key else k, "missing; it is required")
        return mapping

    def string(self, value: Any, key: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {_show(value)}")
        return value

    def integer(self, value: Any, key: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"must be an integer >= {minimum}, got {_show(value)}")
        return value

    def choice(self, value: Any, allowed: tuple[str, ...], key: str) -> str:
        if value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(allowed)}, got {_show(value)}")
        return value

    def strings(self, value: Any, key: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(key, f"must be a list of strings (or one comma-separated string), got {_show(value)}")
        if allowed is not None:
            for v in value:
                self.choice(v, allowed, key)
        return tuple(v.strip() for v in value)

    def path(self, value: Any, key: str, must_exist: str | None = None) -> Path:
        text = self.string(value, key)
        path = Path(os.path.expanduser(text))
        path = (path if path.is_absolute() else self.base / path).resolve()
        if must_exist == "file" and not path.is_file():
            raise self.fail(key, f"no such file {path} (relative paths are relative to {self.base}); fix the path or create it")
        return path


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def parse_job(document: Any, source: Path, base: Path) -> JobSpec:
    """Validate a parsed job document (see the module docstring for the keys)."""
    c = _Checker(source, base)
    doc = c.keys(document, TOP_KEYS, "", required=("db",))
    name = c.string(doc.get("name", source.stem), "name")
    if ("manifest" in doc) == ("zoo" in doc):
        raise c.fail("", "give exactly one of 'manifest: FILE' (existing checkpoints) or 'zoo: {dir: DIR, size: small}' (build the demo zoo)")
    manifest = zoo = None
    if "manifest" in doc:
        manifest = c.path(doc["manifest"], "manifest", must_exist="file")
    else:
        z = c.keys(doc["zoo"], ZOO_KEYS, "zoo", required=("dir",))
        zoo = ZooSpec(
            dir=c.path(z["dir"], "zoo.dir"),
            size=c.choice(z.get("size", "small"), ZOO_SIZES, "zoo.size"),
            seed=c.integer(z.get("seed", 0), "zoo.seed"),
        )
    db = c.path(doc["db"], "db")
    if db.exists() and not db.is_dir():
        raise c.fail("db", f"{db} is a file; a filter database is a folder. Choose another path")
    chunk_rows = None
    if doc.get("extract") is not None:
        e = c.keys(doc["extract"], EXTRACT_KEYS, "extract")
        if e.get("chunk_rows") is not None:
            chunk_rows = c.integer(e["chunk_rows"], "extract.chunk_rows", minimum=1)
    analyses = _analyses(c, doc.get("analyses"))
    figures = _figures(c, doc.get("figures"), db, analyses)
    return JobSpec(name=name, source=source, db=db, manifest=manifest, zoo=zoo, chunk_rows=chunk_rows,
                   analyses=analyses, figures=figures, raw=dict(doc))


def _analyses(c: _Checker, value: Any) -> tuple[AnalysisSettings, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise c.fail("analyses", f"must be a list of analyses, e.g. [{{name: scaled, scaling: scaled, by: [task]}}], got {_show(value)}")
    out, names = [], set()
    for i, item in enumerate(value):
        key = f"analyses[{i}]"
        a = c.keys(item, ANALYSIS_KEYS, key)
        settings = AnalysisSettings(**{f.name: _setting(c, f, a.get(f.name, f.default), f"{key}.{f.name}") for f in options()})
        name = c.string(settings.results_name, f"{key}.name")
        if "/" in name or name.startswith("."):
            raise c.fail(f"{key}.name", f"{name!r} names a folder under DB/results/; use letters, digits, '-' or '_'")
        if name in names:
            raise c.fail(f"{key}.name", f"{name!r} is used twice; give each analysis its own name (its results folder)")
        names.add(name)
        out.append(replace(settings, name=name))
    return tuple(out)


def _setting(c: _Checker, option, value: Any, key: str) -> Any:
    """One analysis setting checked by its kind: a choice, an integer, the groupings or an expression."""
    meta = option.metadata
    if value is None:
        return None
    if meta["choices"]:
        return c.choice(value, meta["choices"], key)
    if option.type == "int":
        return c.integer(value, key, minimum=meta["minimum"])
    if option.name == "by":
        return c.strings(value, key)
    return c.string(value, key)


def _figures(c: _Checker, value: Any, db: Path, analyses: tuple[AnalysisSpec, ...]) -> FigureSpec | None:
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    f = c.keys(value, FIGURE_KEYS, "figures")
    if not analyses:
        raise c.fail("figures", "there are no analyses to draw; add 'analyses:' or remove 'figures:'")
    known = tuple(a.name for a in analyses)
    chosen = c.strings(f["analyses"], "figures.analyses", allowed=known) if f.get("analyses") is not None else known
    out = c.path(f["out"], "figures.out") if f.get("out") is not None else db / "figures"
    formats = c.strings(f.get("formats", ["html"]), "figures.formats", allowed=FIGURE_FORMATS)
    return FigureSpec(out=out, formats=formats, analyses=chosen)


def load_job(path: str | os.PathLike, base: str | os.PathLike | None = None) -> JobSpec:
    """Read and validate the job spec at ``path``; relative paths in it are relative to ``base``
    (default: the current working directory)."""
    source = Path(path).absolute()
    if not source.is_file():
        raise JobSpecError(f"{source}: no such job spec; give the path of a YAML file such as jobs/demo.yaml")
    try:
        document = yaml.safe_load(source.read_text())
    except yaml.YAMLError as err:
        raise JobSpecError(f"{source}: not valid YAML: {err}") from None
    return parse_job(document, source, Path(base).absolute() if base else Path.cwd())
