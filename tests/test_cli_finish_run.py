"""`finish_run`, every command's ending: the last line says what became of the items that
did not fail (written, up to date), or that none was written when every one failed; the
exit code is the run's (2: every failure is the input's, 1: some are not)."""

from __future__ import annotations

import pytest
import typer

from histocurate.cli.base import failure_summary, finish_run
from histocurate.runs import ItemOutcome, StageRun


def _failed(item: str, *, input_error: bool = True) -> ItemOutcome:
    return ItemOutcome(item, "failed", error=f"{item} is unreadable", input_error=input_error)


def _finish(run: StageRun, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """The exit code and stderr's lines (none wrapped) of `finish_run`."""
    with pytest.raises(typer.Exit) as exit_:
        finish_run(run)
    err = capsys.readouterr().err
    return exit_.value.exit_code, [line.strip() for line in err.splitlines() if line.strip()]


def test_every_item_failed_says_none_was_written(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _finish(StageRun([_failed("s0"), _failed("s1")]), capsys)
    assert code == 2
    assert "failed s0: s0 is unreadable" in lines and "failed s1: s1 is unreadable" in lines
    assert lines[-1] == "every item (2) failed; none was written"
    assert not any("the others" in line for line in lines)


def test_some_failed_the_others_written(capsys: pytest.CaptureFixture[str]) -> None:
    run = StageRun([_failed("s0"), ItemOutcome("s1", "done"), ItemOutcome("s2", "done")])
    code, lines = _finish(run, capsys)
    assert code == 2
    assert lines[-1] == "1 item(s) failed; of the others 2 written"


def test_some_failed_the_rest_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    run = StageRun([_failed("s0"), _failed("s1"), ItemOutcome("s2", "skipped")])
    code, lines = _finish(run, capsys)
    assert code == 2
    assert lines[-1] == "2 item(s) failed; of the others 1 up to date (not redone)"
    assert "written" not in lines[-1]


def test_written_and_up_to_date_and_our_failure(capsys: pytest.CaptureFixture[str]) -> None:
    run = StageRun(
        [
            _failed("s0", input_error=False),  # not the input's: exit 1
            ItemOutcome("s1", "done"),
            ItemOutcome("s2", "skipped"),
            ItemOutcome("s3", "skipped"),
        ]
    )
    code, lines = _finish(run, capsys)
    assert code == 1
    assert lines[-1] == "1 item(s) failed; of the others 1 written and 2 up to date (not redone)"


def test_nothing_failed_exits_normally(capsys: pytest.CaptureFixture[str]) -> None:
    finish_run(StageRun([ItemOutcome("s0", "done"), ItemOutcome("s1", "skipped")]))
    assert "failed;" not in capsys.readouterr().err


def test_the_unit_and_what_nothing_means_are_the_callers() -> None:
    """What predict words itself (`histocurate.cli.predict.predict_failure_summary`) for slides."""
    every = StageRun([_failed("a"), _failed("b")])
    nothing = "no prediction was written"
    assert failure_summary(every, unit="slide", nothing=nothing) == (
        "every slide (2) failed; no prediction was written"
    )
    one = StageRun([_failed("a"), ItemOutcome("b", "skipped")])
    assert failure_summary(one, unit="slide") == (
        "1 slide(s) failed; of the others 1 up to date (not redone)"
    )
