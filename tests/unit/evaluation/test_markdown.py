"""The reports' Markdown: a value in a cell, a mean and its spread, a table's head and rows."""

from __future__ import annotations

from speciesclf.evaluation.markdown import MISSING, cell, head, mean_sd, row


def test_a_float_is_formatted_and_anything_else_written_as_it_is() -> None:
    assert cell(0.81234) == "0.812" and cell(None) == MISSING == "–"
    assert cell(-0.0123, signed=True) == "-0.012" and cell(0.05, signed=True) == "+0.050"
    assert (
        cell(1234.4, spec=".0f") == "1234" and cell(7) == "7" and cell("no sign of collapse") == "no sign of collapse"
    )
    assert mean_sd(0.5, 0.0125) == "0.500 ± 0.013"


def test_a_table_is_its_head_then_rows() -> None:
    assert head(["run", "accuracy"]) == ["| run | accuracy |", "|---|---|"]
    assert row(["baseline", 3, cell(0.5)]) == "| baseline | 3 | 0.500 |"
