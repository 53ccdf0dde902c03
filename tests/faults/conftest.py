"""Fixtures of the fault tests: the simulator as the hub client tests use it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nhlink_devtools.hubsim import HubSim, HubSimConfig, SharedSecret
from tests.aio.test_hub_client_sim import KEY, SECRET


@pytest.fixture(autouse=True)
async def _asyncio_debug() -> None:
    asyncio.get_running_loop().set_debug(True)


@pytest.fixture
async def sim() -> AsyncIterator[HubSim]:
    """nhlink-hub-sim accepting the hub client tests' device key."""
    config = HubSimConfig(shared_secrets=[SharedSecret(KEY, SECRET)], health_check=False)
    async with HubSim(config) as hub:
        yield hub
