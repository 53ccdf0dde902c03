"""Running the real daemon against nhlink-hub-sim, a private system bus and logind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from nhlink_devtools.ab_layout import AbLayout, build_ab_firmware
from nhlink_devtools.fw_builder import load_private_key
from nhlink_devtools.hubsim import HubSimConfig
from nhlink_devtools.hubsim.auth import SharedSecret

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "fwup"
PUBLIC_KEY = (FIXTURES / "fwup-key.pub").read_text().strip()
PRODUCT_KEY = "nhp_integrationProductKey"
PRODUCT_SECRET = "integrationProductSecretForTheSimulator01234"
DEVICE = "kiosk-0042"
NHLINK_FWUP = str(Path(sys.executable).parent / "nhlink-fwup")
LAYOUT = AbLayout()
# The bytes of slot A's root file system in an AbLayout image: the firmware that runs.
RUNNING_SLOT = slice(4096 * 512, LAYOUT.rootfs_b * 512)


@dataclass
class Firmware:
    path: Path
    uuid: str
    version: str


def make_firmware(
    folder: Path, version: str, rootfs_size: int = 4 << 20, layout: AbLayout = LAYOUT
) -> Firmware:
    from nhlink_dbus.core.fwup_meta import meta_uuid  # noqa: PLC0415

    path = folder / f"demo-{version}.fw"
    key = load_private_key((FIXTURES / "test-only-fwup-key.priv").read_text())
    rootfs = os.urandom(rootfs_size)
    conf = build_ab_firmware(path, version, rootfs, key, layout=layout, compresslevel=1)
    return Firmware(path, meta_uuid(conf), version)


def install_complete(image: Path, fw: Firmware, layout: AbLayout = LAYOUT) -> None:
    """A device image as the factory writes it: the ``complete`` task of ``fw``."""
    with image.open("wb") as fh:
        fh.truncate(layout.image_bytes)
    subprocess.run(
        [
            NHLINK_FWUP,
            "-a",
            "-q",
            "-d",
            str(image),
            "-t",
            "complete",
            "-i",
            str(fw.path),
            "--public-key",
            PUBLIC_KEY,
        ],
        check=True,
        capture_output=True,
    )


def write_config(
    folder: Path,
    *,
    ws_url: str,
    image: Path,
    applier: str = "builtin",
    extra: str = "",
    layout: AbLayout = LAYOUT,
    media: str = "enabled = false",
    reboot_delay_ms: int = 300,
    idle_timeout_ms: int = 2000,
    fwup_path: str = NHLINK_FWUP,
    public_key: str = PUBLIC_KEY,
) -> Path:
    """The daemon's configuration for the simulator at ``ws_url`` and a disk ``image``
    (``fwup_path``: the program of ``applier = "fwup"``; ``media`` is the [media] table's
    body: by default media are not watched, the host's udev is never touched)."""
    secret = folder / "hub-secret"
    secret.write_text(PRODUCT_SECRET + "\n")
    boot_id = folder / "boot_id"
    if not boot_id.exists():
        boot_id.write_text(f"{uuid.uuid4()}\n")
    secret.chmod(0o600)
    fwup_line = f'fwup_path = "{fwup_path}"\n' if applier == "fwup" else ""
    text = f"""
[hub]
url = "{ws_url}"
identifier = "{DEVICE}"
heartbeat_interval_ms = 30000
rejoin_after_ms = 200

[hub.shared_secret]
key = "{PRODUCT_KEY}"
secret_file = "{secret}"

[firmware]
kv = "{layout.kv_spec(image)}"
devpath = "{image}"
task = "upgrade"
applier = "{applier}"
{fwup_line}public_keys = ["{public_key}"]

[reboot]
delay_ms = {reboot_delay_ms}
retries = 1

[download]
max_disconnects = 5
idle_timeout_ms = {idle_timeout_ms}
time_between_retries_ms = 100

[archives]
dir = "{folder / "archives"}"

[media]
{media}

[service]
state_dir = "{folder / "state"}"
boot_id_file = "{boot_id}"
{extra}
"""
    path = folder / "nhlink.toml"
    path.write_text(text)
    return path


def reboot_happened(folder: Path) -> None:
    """The device rebooted (a new kernel boot id), as a daemon started next sees it."""
    (folder / "boot_id").write_text(f"{uuid.uuid4()}\n")


class Daemon:
    """``nhlink-dbus --config FILE`` as a child process."""

    def __init__(
        self,
        config: Path,
        log: Path,
        bus_address: str,
        export_bus: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        env = dict(os.environ, **(env or {}))
        env.update(DBUS_SYSTEM_BUS_ADDRESS=bus_address, PYTHONUNBUFFERED="1")
        args = [
            sys.executable,
            "-m",
            "nhlink_dbus.daemon",
            "--config",
            str(config),
            "--log-level",
            "debug",
        ]
        if not export_bus:
            args.append("--no-bus")
        self.log = log
        self._fh = log.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self._fh, stderr=subprocess.STDOUT)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        """The log file (the process has ended)."""
        self._fh.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


async def until(predicate, timeout: float, what: str, daemon: Daemon):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something true; fail with the daemon's log."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}\n{daemon.text()[-4000:]}")
        await asyncio.sleep(0.05)


def sim_config() -> HubSimConfig:
    """The simulator as the daemon tests use it: our product key, no health checks."""
    return HubSimConfig(
        shared_secrets=[SharedSecret(PRODUCT_KEY, PRODUCT_SECRET)], health_check=False
    )


def device_with_update(folder: Path, rootfs_size: int = 4 << 20) -> tuple[Firmware, Firmware, Path]:
    """(v1, v2, image): a disk image running v1 in slot A, and v2 to be offered."""
    v1 = make_firmware(folder, "1.0.0", rootfs_size)
    v2 = make_firmware(folder, "2.0.0", rootfs_size)
    image = folder / "disk.img"
    install_complete(image, v1)
    return v1, v2, image
