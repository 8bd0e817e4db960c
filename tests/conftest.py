"""Shared fixtures. Prefect is isolated from any developer setting before it is imported."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# No developer profile, server or setting may leak into the tests: a private PREFECT_HOME,
# no API URL (flow tests get the shared harness below), no analytics.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="histocurate-prefect-home-")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILE", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
for name in [n for n in os.environ if n.startswith("HISTOCURATE_")]:
    del os.environ[name]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session (starting one costs 15-25 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real H&E images); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


# Shared fixtures of several test modules (each module-scoped fixture is made anew per
# module, as when a module defined it itself).
from tests.cytomine_support import sandbox_fixture  # noqa: E402, F401  (fixture "sandbox")
from tests.test_dataset_build import built  # noqa: E402, F401  (a built synthetic dataset)
from tests.test_segment_stage import segment_workspace_fixture  # noqa: E402, F401
from tests.test_selection_pipeline import selection_workspace_fixture  # noqa: E402, F401
