from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from nhlink_dbus.core.nh1 import sign_headers
from nhlink_devtools.hubsim import HubSim, HubSimConfig, SharedSecret

PRODUCT_KEY = "nhp_testProductKey"
PRODUCT_SECRET = "testProductSecret0123456789abcdefghijklmnop"
DEVICE_KEY = "nhd_testDeviceKey"
DEVICE_SECRET = "testDeviceSecret0123456789abcdefghijklmnopq"
DEVICE_ID = "dev-0001"


def nh1_headers(
    key: str = PRODUCT_KEY,
    secret: str = PRODUCT_SECRET,
    identifier: str = DEVICE_ID,
    now_s: float | None = None,
) -> list[tuple[str, str]]:
    return sign_headers(key, secret, identifier, int(now_s if now_s is not None else time.time()))


@pytest.fixture
async def sim() -> AsyncIterator[HubSim]:
    config = HubSimConfig(
        shared_secrets=[
            SharedSecret(PRODUCT_KEY, PRODUCT_SECRET),
            SharedSecret(DEVICE_KEY, DEVICE_SECRET, DEVICE_ID),
        ],
        health_check=False,
    )
    async with HubSim(config) as running:
        yield running
