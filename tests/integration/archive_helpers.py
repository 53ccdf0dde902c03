"""Archives for the end-to-end tests: signed, unsigned or wrongly signed ``.fw`` side
payloads, and a device that runs a firmware (so the daemon can start)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nhlink_dbus.core.fwup_meta import meta_uuid
from nhlink_devtools.fw_builder import create_fw, load_private_key
from tests.integration.daemon_helpers import FIXTURES, Firmware, install_complete, make_firmware

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
