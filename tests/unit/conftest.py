from __future__ import annotations

import os

import pytest

from tests.unit.harness import Recorded, run_program

# Unit tests never talk to a cluster, whatever kubeconfig the machine has.
os.environ["ONBOARDING_RENDER"] = "1"


@pytest.fixture(scope="session")
def prod() -> list[Recorded]:
    return run_program("prod")


@pytest.fixture(scope="session")
def preprod() -> list[Recorded]:
    return run_program("preprod")


@pytest.fixture(scope="session", params=["prod", "preprod"])
def stack(
    request: pytest.FixtureRequest, prod: list[Recorded], preprod: list[Recorded]
) -> list[Recorded]:
    return prod if request.param == "prod" else preprod
