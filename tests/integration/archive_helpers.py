"""Archives for the end-to-end tests: signed, unsigned or wrongly signed ``.fw`` side
payloads, a device that runs a firmware (so the daemon can start), and the daemon on
the private bus answering there."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from nhlink_dbus.core.fwup_meta import meta_uuid
from nhlink_devtools.fw_builder import create_fw, load_private_key
from nhlink_devtools.hubsim import HubSim
from tests.harness import PrivateSystemBus
from tests.harness.link_client import CallFailed, LinkClient
from tests.integration.daemon_helpers import (
    DEVICE,
    FIXTURES,
    Daemon,
    Firmware,
    install_complete,
    make_firmware,
    write_config,
)

GOOD_KEY = FIXTURES / "test-only-fwup-key.priv"
WRONG_KEY = FIXTURES / "test-only-wrong-key.priv"


def make_archive(
    folder: Path,
    name: str,
    *,
    key: Path | None = GOOD_KEY,
    size: int = 1 << 20,
    version: str = "1.0.0",
) -> tuple[Path, str]:
    """(path, meta-uuid) of a new archive holding ``size`` random bytes; ``key`` None:
    unsigned."""
    path = folder / f"{name}.fw"
    meta = {
        "meta-product": "kiosk-content",
        "meta-description": f"{name} content pack",
        "meta-version": version,
        "meta-platform": "x86_64",
        "meta-architecture": "x86_64",
        "meta-author": "tests",
    }
    private = load_private_key(key.read_text()) if key is not None else None
    conf = create_fw(path, meta, {"content.bin": os.urandom(size)}, "", private, compresslevel=1)
    return path, meta_uuid(conf)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def running_device(folder: Path, rootfs_size: int = 1 << 20) -> tuple[Firmware, Path]:
    """(firmware, disk image) of a device running ``firmware`` in slot A."""
    running = make_firmware(folder, "1.0.0", rootfs_size)
    image = folder / "disk.img"
    install_complete(image, running)
    return running, image


DECIDE_LATER = "[decisions]\ntimeout_ms = 60000\n"


async def on_the_bus(client: LinkClient, daemon: Daemon) -> None:
    """Until the daemon answers on the bus (it owns the name once it serves)."""
    async with asyncio.timeout(30):
        while True:
            try:
                await client.call("GetArchives")
                return
            except CallFailed:
                if daemon.proc.poll() is not None:
                    raise AssertionError(daemon.text()) from None
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def daemon_on_bus(
    folder: Path,
    bus: PrivateSystemBus,
    client: LinkClient,
    sim: HubSim,
    image: Path,
    *,
    log: str = "daemon.log",
    extra: str = DECIDE_LATER,
    media: str = "enabled = false",
    env: dict[str, str] | None = None,
) -> AsyncIterator[Daemon]:
    """The real daemon exporting org.nerveshub.Link on ``bus``, answering there; it must
    stop with status 0."""
    cfg = write_config(folder, ws_url=sim.ws_url, image=image, extra=extra, media=media)
    daemon = Daemon(cfg, folder / log, bus.address, export_bus=True, env=env)
    try:
        await sim.wait_for_join(DEVICE, timeout=20)
        await on_the_bus(client, daemon)
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.text()
