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


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_deployment_parameters_pass_the_flows_validation(deployment: dict) -> None:
    """What prefect.yaml gives a deployment is valid for its flow's typed parameters (the
    workspace is the template prefect deploy fills in)."""
    path, name = deployment["entrypoint"].split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    flow.validate_parameters(dict(deployment.get("parameters", {})))


def test_deploying_needs_both_variables_and_stage_runs_do_not_overlap() -> None:
    text = (ROOT / "prefect.yaml").read_text()
    config = yaml.safe_load(text)
    check = config["build"][0]["flows._deploy.require_variables"]
    assert set(check["names"]) == {"HISTOCURATE_REPO", "HISTOCURATE_WORKSPACE"}
    assert "{{ $HISTOCURATE_WORKSPACE }}" in text and "{{ $HISTOCURATE_REPO }}" in text
    stages = {"tile", "embed", "select-luad", "export", "import", "segment", "consensus",
              "prepare-campaign-luad", "nightly-refresh"}  # fmt: skip
    limits = {d["name"]: d.get("concurrency_limit", {}).get("limit") for d in DEPLOYMENTS}
    assert {limits[name] for name in stages} == {1}
