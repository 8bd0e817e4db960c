"""prefect.yaml stays true to the flows: entrypoints exist, required parameters are given."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_deployment_entrypoint_and_parameters(deployment: dict) -> None:
    from prefect import Flow

    path, name = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow)
    signature = inspect.signature(flow.fn)
    given = set(deployment.get("parameters", {}))
    required = {p.name for p in signature.parameters.values() if p.default is p.empty}
    assert required <= given, f"missing parameters {required - given}"
    assert given <= set(signature.parameters), (
        f"unknown parameters {given - set(signature.parameters)}"
    )
