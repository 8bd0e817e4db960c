"""Readable run names and the tags that group runs in the Prefect UI.

- Flow-run names: ``<flow> [<indication|project|name>] · <workspace folder> · <date>``
  (e.g. ``select LUAD · demo-workspace · 2026-06-01 14:03 UTC``) instead of random words.
- Tags: ``histocurate``, ``workspace:<folder>``, ``stage:<stage>``, ``campaign:<project>``
  or ``indication:<name>``; a pipeline or demo run adds ``pipeline:<flow>`` and
  ``group:<flow>-<date-time>`` and passes them to every stage it runs as a subflow, so one
  tag filter in the UI shows one nightly run or one demo, parent and stages together.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SUBJECTS = ("indication", "project", "name")
"""Parameters that name what a run is about, first found first."""


def _now() -> time.struct_time:
    return time.gmtime()


def subject_of(parameters: Mapping[str, Any]) -> str | None:
    for key in SUBJECTS:
        value = parameters.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def workspace_name(parameters: Mapping[str, Any]) -> str | None:
    value = parameters.get("workspace")
    if isinstance(value, (str, Path)) and str(value) and "{{" not in str(value):
        return Path(str(value)).expanduser().name or str(value)
    truth = parameters.get("truth")  # evaluate: no workspace, a truth table
    return Path(str(truth)).stem if isinstance(truth, str) and truth else None


def run_name_for(flow_name: str, parameters: Mapping[str, Any], subject: str | None = None) -> str:
    """The name of a run of ``flow_name`` with these parameters.

    >>> import time
    >>> run_name_for("select", {"workspace": "/data/demo", "indication": "LUAD"})[:20]
    'select LUAD · demo ·'
    """
    head = " ".join(p for p in (flow_name, subject or subject_of(parameters)) if p)
    parts = [head, workspace_name(parameters), time.strftime("%Y-%m-%d %H:%M UTC", _now())]
    return " · ".join(p for p in parts if p)


def run_name() -> str:
    """``flow_run_name`` of every histocurate flow (reads the run's parameters)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow is None:
        return "histocurate"
    return run_name_for(context.flow.name, context.parameters or {})


def tag_value(text: str) -> str:
    """A value made safe for a tag (no spaces or commas).

    >>> tag_value("My campaign, v2")
    'My-campaign-v2'
    """
    return "-".join(text.replace(",", " ").split())


def stage_tags(
    stage: str,
    *,
    workspace: str | None = None,
    campaign: str | None = None,
    indication: str | None = None,
) -> list[str]:
    """Tags of one stage run.

    >>> stage_tags("segment", workspace="/data/ws", campaign="lung-2026")
    ['histocurate', 'stage:segment', 'workspace:ws', 'campaign:lung-2026']
    """
    tags = ["histocurate", f"stage:{stage}"]
    if workspace:
        tags.append(f"workspace:{tag_value(Path(workspace).expanduser().name)}")
    if campaign:
        tags.append(f"campaign:{tag_value(campaign)}")
    if indication:
        tags.append(f"indication:{tag_value(indication)}")
    return tags


def group_tags(flow_name: str, **kwargs: str | None) -> list[str]:
    """Tags of a pipeline (or demo) run, passed down to its stages.

    >>> group_tags("demo", workspace="/tmp/demo")[:3]
    ['histocurate', 'pipeline:demo', 'workspace:demo']
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", _now())
    tags = ["histocurate", f"pipeline:{flow_name}"]
    tags += [t for t in stage_tags(flow_name, **kwargs) if not t.startswith(("stage:", "histo"))]
    return [*tags, f"group:{flow_name}-{stamp}"]


def merged(*lists: Iterable[str]) -> list[str]:
    """Tags in order, each once."""
    seen: dict[str, None] = {}
    for tags in lists:
        for tag in tags:
            seen.setdefault(tag, None)
    return list(seen)


def set_run_tags_and_name(tags: Iterable[str], name: str | None = None) -> None:
    """Add ``tags`` to the current flow run (and rename it) on the server."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    run = context.flow_run
    wanted = merged(run.tags or [], tags)
    if wanted == list(run.tags or []) and (name is None or name == run.name):
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(run.id, tags=wanted, name=name)
    run.tags = wanted
    if name is not None:
        run.name = name


def listed(names: list[str], limit: int = 10) -> str:
    """Names for a log line, at most ``limit`` of them.

    >>> listed(["a", "b", "c"], 2)
    'a, b and 1 more'
    """
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
