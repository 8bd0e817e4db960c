"""[prefect]: how the stages' Prefect flows run their tasks (`flows/_stage.py`).

Only the flows read this section; the plain CLI path ignores it. The task runner of every
flow is a thread pool sized to the machine that runs the flow (its CPUs, or Prefect's
``PREFECT_TASK_RUNNER_THREAD_POOL_MAX_WORKERS``); ``task_workers`` lowers that per
workspace, and a stage on a GPU runs one task at a time.
"""

from __future__ import annotations

from pydantic import Field

from histocurate.config.base import Section

DEFAULT_TIMEOUTS_S: dict[str, float] = {
    "tile": 1800.0,  # one slide
    "embed": 7200.0,  # one slide (a CPU encoder on a large slide)
    "select": 3600.0,  # one slide's scan or score, or the model fit
    "export": 7200.0,  # one campaign's uploads
    "import": 3600.0,  # one campaign's annotations
    "push-consensus": 3600.0,
    "segment": 1800.0,  # one batch of tiles
    "consensus": 3600.0,  # one shard of tiles
    "dataset": 3600.0,  # one slide's tiles
    "evaluate": 3600.0,  # the evaluation and its bootstrap
    "train": 7 * 24 * 3600.0,
    "predict": 7200.0,  # one slide
}


class PrefectConfig(Section):
    """Tasks of the Prefect flows: parallelism, retries, timeouts, failure notices."""

    task_workers: int | None = Field(
        None,
        ge=1,
        description="Tasks of one flow run at a time. None: the CPUs of the machine running "
        "the flow (GPU stages: one at a time).",
    )
    retries: int = Field(
        2, ge=0, description="Retries of a task that failed transiently (network, 5xx, I/O)."
    )
    retry_delay_s: float = Field(
        10.0, ge=0, description="Wait before the first retry; doubled for each next one."
    )
    timeouts_s: dict[str, float] = Field(
        default_factory=dict,
        description="Timeout of one task per stage in seconds, over the defaults "
        "(DEFAULT_TIMEOUTS_S), e.g. {embed = 600}; 0: no limit.",
    )
    notify_block: str | None = Field(
        None,
        description="Prefect notification block told about every failed run, as "
        "'<block type>/<name>' (e.g. 'slack-webhook/histocurate-ops'). None: only logged.",
    )

    def timeout_s(self, stage: str) -> float | None:
        """Timeout of one task of ``stage`` (None: no limit).

        >>> PrefectConfig(timeouts_s={"embed": 600}).timeout_s("embed")
        600.0
        >>> PrefectConfig(timeouts_s={"tile": 0}).timeout_s("tile") is None
        True
        """
        seconds = {**DEFAULT_TIMEOUTS_S, **self.timeouts_s}.get(stage)
        return float(seconds) if seconds else None
