"""What the end-to-end flows share: one parent run, its stages as subflows, one report.

`pipeline_run` frames the body of a pipeline flow (prepare-campaign, refresh-annotations,
the demo): it checks the workspace, tags the parent run (``pipeline:<flow>``,
``group:<flow>-<time>``, workspace, campaign) and passes the tags to every stage it runs
(each stage is a subflow with its own artifacts), and records which files of the workspace
the run changed. Its `PipelineRun.finish` publishes one summary: each stage's status line
and the files changed, or "nothing new: no file of the workspace changed", which is what a
nightly run with no new annotations must say.

A stage whose items failed stops the pipeline there (the parent fails with its message),
unless the pipeline keeps going (``keep_going=True``: the nightly predict, where a slide
that cannot be tiled must not keep the others from being predicted): then every stage
runs, and `PipelineRun.finish` ends the parent Failed with the failed stages and their
items in the state message (the stages' run objects attached).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import tags
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.states import Failed, State

from flows._artifacts import artifact_key
from flows._naming import group_tags, listed, set_run_tags_and_name
from flows._params import checked_workspace
from flows._stage import _FROM_DEPLOYMENT, early_workspace, from_deployment
from histocurate.errors import HistocurateError

Snapshot = dict[str, tuple[int, int]]


def workspace_files(root: Path) -> Snapshot:
    """Every file under ``root``: relative path -> (size, modification time in ns)."""
    found: Snapshot = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed while we look (a temp file renamed)
                continue
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


def changed_files(before: Snapshot, after: Snapshot) -> list[str]:
    """Files added, removed or rewritten between two snapshots.

    >>> changed_files({"a": (1, 1), "b": (2, 2)}, {"a": (1, 1), "b": (2, 3), "c": (1, 1)})
    ['b', 'c']
    """
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def status_of(run: Any) -> str:
    """One line for a stage's run object (or whatever a subflow returned)."""
    line = getattr(run, "status_line", None)
    return line() if callable(line) else str(run)


class StageFailed(HistocurateError):
    """A stage of a pipeline ended Failed (its items failed): the pipeline stops there."""


@dataclass
class PipelineRun:
    """The frame `pipeline_run` gives a pipeline body."""

    name: str
    workspace: Path
    before: Snapshot
    keep_going: bool = False
    stages: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def run(self, stage: str, flow_fn: Any, /, **parameters: Any) -> Any:
        """Run ``flow_fn`` as the subflow of ``stage``; its run object. A stage whose items
        failed stops the pipeline with its message (kept for `finish` when the pipeline
        keeps going); an error of the stage is re-raised."""
        state = flow_fn(**parameters, return_state=True)
        data = state.result(raise_on_failure=False)
        if isinstance(data, BaseException):
            raise data
        self.stages[stage] = data
        if state.is_failed():
            message = state.message or "failed"
            if not self.keep_going:
                raise StageFailed(f"stage {stage} failed, the pipeline stopped: {message}")
            self.failed[stage] = message
            get_run_logger().error("stage %s failed: %s", stage, message)
        return data

    def finish(self) -> dict[str, Any] | State:
        """Log and publish the summary of the stages run; return their run objects, in a
        Failed state naming the failed stages and their items when stages failed."""
        logger = get_run_logger()
        changed = changed_files(self.before, workspace_files(self.workspace))
        lines = [f"- **{stage}**{' (failed)' if stage in self.failed else ''}: "
                 f"{status_of(run)}" for stage, run in self.stages.items()]  # fmt: skip
        if changed:
            verdict = f"{len(changed)} file(s) of the workspace changed"
            logger.info("%s: %s: %s", self.name, verdict, listed(changed, 5))
            files = ["", *[f"- `{p}`" for p in changed[:50]]]
            files += [f"- _and {len(changed) - 50} more_"] if len(changed) > 50 else []
        else:
            verdict, files = "nothing new: no file of the workspace changed", []
            logger.info("%s: %s", self.name, verdict)
        failures = [f"{stage}: {message}" for stage, message in self.failed.items()]
        problems = ["", "Failed:", *[f"- {line}" for line in failures]] if failures else []
        markdown = "\n".join([f"# {self.name}", "", *lines, *problems, "", verdict, *files, ""])
        failed = f"{len(failures)} of {len(self.stages)} stage(s) failed; " if failures else ""
        create_markdown_artifact(key=artifact_key(f"{self.name}-summary"), markdown=markdown,
                                 description=f"{self.name}: {failed}{verdict}")  # fmt: skip
        result = {**self.stages, "changed_files": changed}
        if failures:
            message = f"{len(failures)} of {len(self.stages)} stage(s) failed: "
            return Failed(message=message + "; ".join(failures), data=result)
        return result


@contextmanager
def pipeline_run(
    name: str,
    workspace: str,
    *,
    campaign: str | None = None,
    indication: str | None = None,
    keep_going: bool = False,
) -> Iterator[PipelineRun]:
    """Frame of a pipeline flow's body: tags for the parent and its stages, one summary.
    The parent is tagged before the workspace is checked, so a run refused for its
    workspace is found under its tags too."""
    group = group_tags(name, workspace=early_workspace(workspace), campaign=campaign,
                       indication=indication)  # fmt: skip
    with ExitStack() as stack:
        if _FROM_DEPLOYMENT.get() is None:
            token: contextvars.Token[bool | None] = _FROM_DEPLOYMENT.set(from_deployment())
            stack.callback(_FROM_DEPLOYMENT.reset, token)
        set_run_tags_and_name(group)
        stack.enter_context(tags(*group))
        root = Path(checked_workspace(workspace)).expanduser().resolve()
        yield PipelineRun(name, root, workspace_files(root), keep_going=keep_going)
