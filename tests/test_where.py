"""``--where`` / ``--fit-on`` errors name the likely mistake and its fix (issue 18, step 3)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from filtershift.analysis.plan import PlanError, select
from filtershift.analysis.where import UnclosedQuote, diagnose, operator_fix, tokens, unknown_names
from filtershift.bench.synthetic import gaussian, generate_filters, model_tables, per_layer

COLUMNS = ["layer_id", "model_id", "name", "conv_index", "depth", "depth_decile", "task", "data_type", "model_name"]
TABLE = pd.DataFrame({
    "layer_id": [0, 1, 2], "model_id": [0, 0, 1], "name": ["c0", "c1", "c0"], "conv_index": [0, 1, 0],
    "depth": [0.0, 1.0, 0.0], "depth_decile": [0, 9, 0], "task": ["cls", "cls", "seg"],
    "data_type": ["natural", "medical", "natural"], "model_name": ["a", "a", "b"],
})


@pytest.mark.parametrize("expr, fixed", [
    ("task = 'cls'", "task == 'cls'"),
    ("task='cls' and depth_decile=0", "task=='cls' and depth_decile==0"),
    ("task == 'cls' && depth_decile > 1", "task == 'cls' and depth_decile > 1"),
    ("task == 'cls' || depth_decile>1", "task == 'cls' or depth_decile>1"),
    ("depth_decile => 5", "depth_decile >= 5"),
    ("!(task == 'cls')", "not (task == 'cls')"),
])
def test_wrong_operators_are_named_with_the_corrected_expression(expr, fixed):
    corrected, hints = operator_fix(expr, tokens(expr))
    assert corrected == fixed and hints
    message = diagnose(expr, COLUMNS)
    assert f'Try --where "{fixed}"' in message


def test_single_equals_says_did_you_mean_double():
    assert diagnose("task = 'cls'", COLUMNS).startswith("a single '=' assigns; did you mean '=='?")


@pytest.mark.parametrize("expr", [
    "depth_decile >= 5", "depth_decile <= 5", "task != 'cls'", "task == 'a=b'", 'name == "x == y && z"',
    "task == 'it\\'s = ok'", "model_name.str.startswith('a')", "abs(depth) > 0.5", "task in ['cls', 'seg']",
    "depth > 1e-3 and not depth_decile == 9", "depth < inf", "`task` == 'cls'", "(conv_index == 0) & (depth >= 0)",
])
def test_valid_expressions_pass_the_checks(expr):
    assert diagnose(expr, COLUMNS) is None


def test_operators_inside_quotes_are_left_alone():
    assert [t.kind for t in tokens("task == 'a = b || c'")] == ["name", "op", "string"]


@pytest.mark.parametrize("expr, position, quote", [
    ("task == 'cls", 9, "single quote"), ('task == "cls', 9, "double quote"), ("`task == 'cls'", 1, "backtick"),
    ("task == 'it\\'s", 9, "single quote"),
])
def test_unclosed_quotes_are_found(expr, position, quote):
    with pytest.raises(UnclosedQuote) as err:
        tokens(expr)
    assert (err.value.position + 1, err.value.quote) == (position, quote)
    assert diagnose(expr, COLUMNS).startswith(f"the {quote} opened at character {position} is never closed")


def test_unknown_column_lists_columns_and_suggests_the_nearest():
    message = diagnose("tsk == 'cls' and depth_decle < 3", COLUMNS)
    assert "no column 'tsk' (did you mean 'task'?)" in message
    assert "no column 'depth_decle' (did you mean 'depth_decile'?)" in message
    assert "The columns are: layer_id, model_id, name, conv_index" in message
    assert "did you mean 'task'" in diagnose("Task == 'cls'", COLUMNS)


def test_an_unquoted_text_value_is_an_unknown_name_with_the_quoting_hint():
    message = diagnose("task == classification", COLUMNS)
    assert "no column 'classification'" in message and "Text values need quotes" in message


def test_attributes_functions_and_pandas_constants_are_not_columns():
    toks = tokens("model_name.str.contains('x') and abs(depth) < inf and True")
    assert unknown_names(toks, COLUMNS) == []


def test_names_of_the_callers_variables_are_not_taken_as_columns():
    # pandas resolves unknown bare names in the calling frame: `option` is a local of select()
    with pytest.raises(PlanError, match="no column 'option'"):
        select(TABLE, "option == '--where'", "--where")


@pytest.mark.parametrize("expr, message", [
    ("depth_decile + 1", r"must be a condition \(true/false per layer\), not a value \(it gives int64\)"),
    ("task", "task is a column, not a condition"),
    ("task ==", "could not be evaluated"),
])
def test_values_and_broken_syntax(expr, message):
    with pytest.raises(PlanError, match=message):
        select(TABLE, expr, "--where")


def test_fit_on_names_its_own_option():
    with pytest.raises(PlanError, match=r"^--fit-on \"depth_decile = 9\": .* Try --fit-on \"depth_decile == 9\""):
        select(TABLE, "depth_decile = 9", "--fit-on")


def test_select_still_selects():
    assert select(TABLE, "task == 'cls' and depth_decile >= 5", "--where").tolist() == [False, True, False]


def test_cli_names_the_mistake_and_exits_2(synthetic_db):
    models, layers = model_tables([{"name": "a", "task": "cls", "data_type": "natural", "dataset": "d", "family": "f"}], [[30, 30]], layer_name="c{}")
    db = synthetic_db(models, layers, generate_filters(per_layer(gaussian()), layers, seed=3), chunk_rows=16).path
    run = subprocess.run([sys.executable, "-m", "filtershift", "analyze", str(db), "--threads", "--where", "task = 'cls'"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "error: --where \"task = 'cls'\": a single '=' assigns; did you mean '=='? Try --where \"task == 'cls'\"." in run.stderr
    assert "Traceback" not in run.stderr and "itemsize" not in run.stderr
    assert not (db / "results").exists() or not any((db / "results").iterdir())
