"""The stage contract: how every stage runs, whoever calls it.

Every stage is one function ``run_<stage>(config, *, mapper=map, progress=None) ->
<Stage>Run``. It plans (what is to do, what is up to date), removes stale files, runs the
work per item through ``mapper`` and returns a run object with the totals. The CLI calls it
with the plain `map` and a rich progress bar; the stage's Prefect flow calls it with a
mapper that runs each item as a task (`flows/_stage.py`). Both get the same run object and
print the same `Report`, so a stage behaves the same from a shell and from the Prefect UI.

Per-item results are `ItemOutcome`s (a slide tiled, a tile segmented, a shard of
consensus): done, skipped or failed, with a count, the seconds it took, and the error. A
failed item never stops the others; `StageRun.exit_code` tells the CLI what to return (2:
the items' input was at fault, 1: something else failed, 0: none failed).

>>> def square(n: int) -> ItemOutcome:
...     if n < 0:
...         raise UserInputError(f"{n} is negative")
...     return ItemOutcome(str(n), "done", count=n * n)
>>> work = ItemWork(square, name_of=str, stage="demo")
>>> outcomes = run_items(work, [1, 2, -3])
>>> [(o.item, o.status, o.count) for o in outcomes]
[('1', 'done', 1), ('2', 'done', 4), ('-3', 'failed', 0)]
>>> outcomes[2].error, outcomes[2].input_error
('-3 is negative', True)
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import numpy as np
import pandas as pd

from histocurate.errors import UserInputError

T = TypeVar("T")
R = TypeVar("R")

Status = Literal["done", "skipped", "failed"]
STATUSES: tuple[Status, ...] = ("done", "skipped", "failed")

Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]
"""Like the builtin `map`: apply a function to items, results in the items' order."""


class Progress(Protocol):
    """Where a stage reports how far it is (a rich bar in the CLI, an artifact in Prefect)."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What happened to one item of a stage (a slide, a batch of tiles, a shard).

    ``count`` is what the item produced (tiles, masks, nuclei); ``extra`` holds a stage's
    other per-item counters (numbers, summed by `StageRun.total`) and values; keep them
    small and picklable: outcomes cross process and task boundaries.
    """

    item: str
    status: Status
    count: int = 0
    seconds: float = 0.0
    error: str | None = None
    input_error: bool = False  # True: the item's input is at fault (exit code 2)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")

    def __str__(self) -> str:
        return f"{self.item}: {self.error}" if self.error else f"{self.item}: {self.status}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ItemFailed(Exception):
    """Raised by an item's work to fail with an outcome it made itself (its counts and
    error kept); `ItemWork` returns that outcome."""

    def __init__(self, outcome: ItemOutcome) -> None:
        super().__init__(outcome.error or f"{outcome.item} failed")
        self.outcome = outcome


@dataclass(frozen=True)
class ItemWork(Generic[T]):
    """The work of one item, wrapped so that a failure becomes a failed outcome.

    ``fn(item)`` does the work and returns its outcome (raising on failure);
    ``name_of(item)`` names the item (slide or tile id) for outcomes, logs and task names.
    Both must be picklable (module-level functions, `functools.partial`) when a mapper
    sends them to other processes. A mapper that retries (Prefect) calls ``fn`` itself and
    turns the last exception into an outcome with `failure`.
    """

    fn: Callable[[T], ItemOutcome]
    name_of: Callable[[T], str]
    stage: str

    def __call__(self, item: T) -> ItemOutcome:
        start = time.perf_counter()
        try:
            return self.fn(item)
        except Exception as exc:  # an item's failure is its outcome; the others go on
            return self.failure(item, exc, seconds=time.perf_counter() - start)

    def failure(self, item: T, exc: BaseException, *, seconds: float = 0.0) -> ItemOutcome:
        """The failed outcome of ``item`` for ``exc`` (input errors keep their message;
        anything else is named with its type and the place it was raised)."""
        if isinstance(exc, ItemFailed):
            return exc.outcome
        if isinstance(exc, UserInputError):
            return ItemOutcome(
                self.name_of(item), "failed", seconds=seconds, error=str(exc), input_error=True
            )
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
        return ItemOutcome(
            self.name_of(item), "failed", seconds=seconds, error=f"{type(exc).__name__}: {exc}{at}"
        )


def run_items(
    work: ItemWork[T],
    items: Sequence[T],
    *,
    mapper: Mapper = map,
    progress: Progress | None = None,
    description: str | None = None,
) -> list[ItemOutcome]:
    """Run ``work`` over ``items`` through ``mapper``, reporting progress as items finish."""
    if progress is not None:
        progress.start(len(items), description or work.stage)
    outcomes = []
    for outcome in mapper(work, items):
        outcomes.append(outcome)
        if progress is not None:
            progress.advance(1)
    return outcomes


def progress_mapper(mapper: Mapper, progress: Progress | None) -> Mapper:
    """``mapper`` reporting each pass over items to ``progress`` (a stage with several
    passes, such as the selection's scan and score: one bar per pass)."""
    if progress is None:
        return mapper

    def mapped(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        inner = getattr(fn, "func", fn)
        progress.start(len(items), getattr(inner, "__name__", "items").strip("_"))
        for result in mapper(fn, items):
            progress.advance(1)
            yield result

    return mapped


def skipped(items: Iterable[str], **extra: Any) -> list[ItemOutcome]:
    """Outcomes of items found up to date by the plan (they never reach the mapper)."""
    return [ItemOutcome(item, "skipped", extra=dict(extra)) for item in items]


@dataclass
class Report:
    """What a run shows its user, in the terminal and in the Prefect UI alike.

    ``summary``: lines of totals; ``table``: one row per item (or whatever the stage's
    main table is); ``tables``: more named tables; ``warnings``: what needs a look;
    ``images``: pictures of the run (overlays, plots) to attach; ``body``: markdown that a
    stage renders itself (the selection and agreement reports), which then shows ``tables``
    itself: they are not rendered again, only published as table artifacts.
    """

    title: str
    summary: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    body: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)

    def to_markdown(self, *, max_rows: int = 200) -> str:
        """The report as markdown (what the Prefect markdown artifact shows)."""
        has_title = bool(self.body and self.body.startswith("# "))
        parts = [] if has_title else [f"# {self.title}", ""]
        parts += [f"{line}  " for line in self.summary]
        if self.warnings:
            parts += ["", "**Needs a look:**", ""] + [f"- {w}" for w in self.warnings]
        if self.body:
            parts += ["", self.body]
        named = [] if self.body else list(self.tables.items())
        for name, frame in ([("", self.table)] if self.table is not None else []) + named:
            if frame is None:
                continue
            parts += ["", f"## {name}" if name else "", markdown_table(frame, max_rows=max_rows)]
        if self.outputs:
            parts += ["", "Outputs:", ""] + [f"- {k}: `{v}`" for k, v in self.outputs.items()]
        return "\n".join(parts).strip() + "\n"


def rounded(value: Any, digits: int = 3) -> Any:
    """A value as a table shows it: floats to ``digits`` significant decimals, NaN blank."""
    if isinstance(value, np.generic):  # numpy scalars (float32 included) as Python values
        value = value.item()
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        return round(value, digits) if abs(value) < 1e6 else round(value)
    return value


def markdown_table(frame: pd.DataFrame, *, max_rows: int = 200) -> str:
    """A frame as a markdown table (floats rounded, at most ``max_rows`` rows)."""
    if frame.empty:
        return "_(none)_"
    shown = frame.head(max_rows)
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "---|" * len(shown.columns)
    rows = [
        "| " + " | ".join("" if (v := rounded(x)) is None else str(v) for x in row) + " |"
        for row in shown.itertuples(index=False)
    ]
    more = [f"\n_{len(frame) - max_rows} more rows_"] if len(frame) > max_rows else []
    return "\n".join([header, rule, *rows, *more])


@dataclass
class StageRun:
    """Base of every stage's run object: the per-item outcomes and the wall time."""

    stage: ClassVar[str] = "stage"
    outcomes: list[ItemOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def with_status(self, status: Status) -> list[ItemOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def failed(self) -> list[ItemOutcome]:
        return self.with_status("failed")

    @property
    def done(self) -> list[ItemOutcome]:
        return self.with_status("done")

    @property
    def skipped(self) -> list[ItemOutcome]:
        return self.with_status("skipped")

    def total(self, key: str = "count") -> float:
        """Sum of ``count`` (or of the numeric ``extra[key]``) over the outcomes."""
        if key == "count":
            return sum(o.count for o in self.outcomes)
        return sum(o.extra.get(key, 0) for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed; 2 when every failure is the input's; 1 otherwise."""
        if not self.failed:
            return 0
        return 2 if all(o.input_error for o in self.failed) else 1

    def outcome_table(self, count_name: str = "count") -> pd.DataFrame:
        """One row per item: item, status, count, seconds, error."""
        return pd.DataFrame(
            {
                "item": [o.item for o in self.outcomes],
                "status": [o.status for o in self.outcomes],
                count_name: [o.count for o in self.outcomes],
                "seconds": [round(o.seconds, 2) for o in self.outcomes],
                "error": [o.error or "" for o in self.outcomes],
            }
        )

    def status_line(self, unit: str = "items") -> str:
        return (
            f"{len(self.done)} {unit} done, {len(self.skipped)} up to date, "
            f"{len(self.failed)} failed ({self.seconds:.1f} s)"
        )

    def failure_lines(self) -> list[str]:
        return [str(o) for o in self.failed]

    def report(self) -> Report:
        """The run as its user sees it; stages override this with their own totals."""
        return Report(
            title=self.stage,
            summary=[self.status_line()],
            table=self.outcome_table(),
            warnings=self.failure_lines(),
        )


def timed(fn: Callable[[], R]) -> tuple[R, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    return fn(), time.perf_counter() - start
