"""Terminal tables never cut digits: wide consoles off a terminal, folding columns."""

from __future__ import annotations

import io

from pimc.compiler.tables import MIN_PIPE_WIDTH, Table, console


def test_console_off_a_terminal_is_wide():
    assert console(file=io.StringIO()).width >= MIN_PIPE_WIDTH


def test_numbers_fold_instead_of_being_cut():
    number = "1116913" * 20
    table = Table(title="t")
    table.add_column("name")
    table.add_column("value", justify="right")
    table.add_row("params", number)
    out = io.StringIO()
    console(file=out, width=40).print(table)
    text = out.getvalue()
    assert "…" not in text
    digits = "".join(ch for ch in text if ch.isdigit())
    assert number in digits


def test_pass_listing_through_a_pipe_is_not_cut(capsys):
    from pimc.cli.main import main

    assert main(["passes"]) == 0
    assert "…" not in capsys.readouterr().out
