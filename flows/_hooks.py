"""What happens when a histocurate flow run fails or crashes: it says so, loudly.

`on_stage_failure` is the ``on_failure`` and ``on_crashed`` hook of every flow made with
`flows._stage.stage_flow`, so deployments (scheduled or not) have it too. It logs one
error line with the state's message (the failed items and their errors) and, for a run
that is not a subflow, sends it to the Prefect notification block named by
``[prefect] notify_block`` of the workspace (or ``HISTOCURATE_PREFECT__NOTIFY_BLOCK`` in
the worker's environment): a Slack webhook, an e-mail, a custom webhook. A subflow's
failure reaches the notice of its parent, which fails with it: one notice per pipeline.
"""

from __future__ import annotations

from typing import Any


def failure_notice(flow_name: str, run_name: str, message: str | None) -> tuple[str, str]:
    """Subject and body of the notice of a failed run.

    >>> failure_notice("tile", "tile · ws", "1 item(s) failed: bad: not a slide")[0]
    'histocurate: tile failed (tile · ws)'
    """
    subject = f"histocurate: {flow_name} failed ({run_name})"
    return subject, f"{subject}\n\n{message or 'no message'}"


def notify_block_name(parameters: dict[str, Any]) -> str | None:
    """The notification block of the run's workspace (None: none configured)."""
    import os

    from histocurate.config import load_config

    workspace = parameters.get("workspace")
    try:
        if isinstance(workspace, str) and workspace and "{{" not in workspace:
            return load_config(workspace).prefect.notify_block
    except Exception:  # a workspace that cannot be read: the environment may still name one
        pass
    return os.environ.get("HISTOCURATE_PREFECT__NOTIFY_BLOCK") or None


def on_stage_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Log the failure of a run; notify the configured block when it is a top-level run."""
    from prefect.logging.loggers import flow_run_logger

    logger = flow_run_logger(flow_run, flow)
    subject, body = failure_notice(flow.name, flow_run.name, state.message)
    logger.error("%s: %s", subject, state.message or "no message")
    if flow_run.parent_task_run_id is not None:
        return  # a subflow: its parent fails with it and sends the notice
    name = notify_block_name(dict(flow_run.parameters or {}))
    if not name:
        return
    try:
        from prefect.blocks.core import Block

        block = Block.load(name)
        block.notify(body=body, subject=subject)  # type: ignore[union-attr]
        logger.info("failure notice sent through block %r", name)
    except Exception as exc:  # the notice must not hide the failure it reports
        logger.error("could not send the failure notice through block %r: %s", name, exc)
