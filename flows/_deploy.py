"""Build steps of ``prefect.yaml``: what `prefect deploy` checks before it deploys.

- `require_variables`: refuses to deploy, with one readable message and no traceback, when
  an environment variable the deployments read (``HISTOCURATE_REPO``,
  ``HISTOCURATE_WORKSPACE``) is missing: `prefect deploy` would otherwise deploy empty
  parameters and pull steps that fail only when a run starts.
- `schedule_when_set`: a deployment whose runs need a variable that may come later (the
  nightly predict's ``HISTOCURATE_CHECKPOINT``: there is no model before the first
  training) is deployed with its schedule inactive while the variable is missing, and says
  so; ``active: "{{ <step id>.active }}"`` in the schedule reads the answer.

A step raising `SystemExit` stops `prefect deploy` with that exit code and without the
traceback it prints for other errors. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import os
import sys


def _missing(names: list[str]) -> list[str]:
    return [name for name in names if not os.environ.get(name, "").strip()]


def require_variables(names: list[str], meaning: str, example: str) -> dict[str, str]:
    """The variables ``names``; `prefect deploy` stops (exit code 1) when one is unset.

    >>> os.environ["HC_DOCTEST"] = "/data/ws"
    >>> require_variables(["HC_DOCTEST"], "the workspace", "HC_DOCTEST=/data/ws")
    {'HC_DOCTEST': '/data/ws'}
    >>> del os.environ["HC_DOCTEST"]
    """
    missing = _missing(names)
    if missing:
        print(
            f"\nnot deployed: prefect.yaml needs {' and '.join(missing)} set ({meaning}); "
            f"e.g. {example} prefect deploy --all\n",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return {name: os.environ[name] for name in names}


def schedule_when_set(name: str, deployment: str, meaning: str) -> dict[str, bool]:
    """``{"active": True}`` when ``name`` is set; otherwise False, and a line that says the
    schedule of ``deployment`` is deployed inactive and how to activate it.

    >>> _ = os.environ.pop("HC_DOCTEST_MODEL", None)
    >>> schedule_when_set("HC_DOCTEST_MODEL", "nightly", "the model")
    {'active': False}
    """
    if not _missing([name]):
        return {"active": True}
    print(
        f"\n{deployment}: {name} is not set ({meaning}): its schedule is deployed INACTIVE "
        f"(a run without it is refused); deploy it again with {name} set to schedule it: "
        f"{name}=... prefect deploy -n {deployment}\n",
        file=sys.stderr,
    )
    return {"active": False}
