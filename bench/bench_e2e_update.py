"""Benchmark: an end-to-end firmware update through the daemon.

For 64 MiB and 256 MiB firmware served by nhlink-hub-sim over loopback: the
wall time from the hub's ``update`` push to logind's ``Reboot`` call (download,
verify, write into the inactive slot of an A/B image, fsync), its ratio to
``curl -s URL | nhlink-fwup -a ...`` on the same file and image, and the
daemon's peak RSS (it must not grow with the firmware size). Uses a private
system bus with python-dbusmock's logind, as the tests do. Run with
``make bench``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nhlink_devtools.ab_layout import AbLayout  # noqa: E402
from nhlink_devtools.hubsim import HubSim  # noqa: E402
from tests.harness import LogindMock, start_system_bus  # noqa: E402
from tests.integration.daemon_helpers import (  # noqa: E402
    DEVICE,
    NHLINK_FWUP,
    PUBLIC_KEY,
    Daemon,
    install_complete,
    make_firmware,
    sim_config,
    write_config,
)

LAYOUT = AbLayout(rootfs_blocks=(300 << 20) // 512)
REBOOT_DELAY_S = 0.3  # [reboot] delay_ms of tests/integration/daemon_helpers.write_config


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def _one(
    folder: Path, mib: int, bus_address: str, logind: LogindMock
) -> tuple[float, float, int]:
    v1 = make_firmware(folder, f"1.0.{mib}", rootfs_size=1 << 20, layout=LAYOUT)
    v2 = make_firmware(folder, f"2.0.{mib}", rootfs_size=mib << 20, layout=LAYOUT)
    image = folder / f"disk-{mib}.img"
    install_complete(image, v1, layout=LAYOUT)
    baseline = folder / f"baseline-{mib}.img"
    shutil.copy(image, baseline)
    config = sim_config()
    async with HubSim(config) as sim:
        device = folder / f"device-{mib}"  # its own state folder (update journal)
        device.mkdir()
        cfg = write_config(
            device,
            ws_url=sim.ws_url,
            image=image,
            layout=LAYOUT,
            extra="[decisions]\ntimeout_ms = 1000\n",
        )
        daemon = Daemon(cfg, folder / f"daemon-{mib}.log", bus_address)
        try:
            await sim.wait_for_join(DEVICE, timeout=30)
            logind.clear_calls()
            start = time.perf_counter()
            payload = await sim.offer_update(DEVICE, v2.path)
            deadline = time.perf_counter() + 300
            while not logind.reboot_calls():
                if daemon.proc.poll() is not None or time.perf_counter() > deadline:
                    raise SystemExit(daemon.text()[-3000:])
                await asyncio.sleep(0.01)
            wall = time.perf_counter() - start
            rss = _peak_rss_kib(daemon.proc.pid)
        finally:
            daemon.stop()
        url = payload["firmware_url"]
        start = time.perf_counter()
        shell = (
            f"curl -sf '{url}' | {NHLINK_FWUP} -a -q -d {baseline} -t upgrade -i - "
            f"--public-key {PUBLIC_KEY}"
        )
        # Not subprocess.run: the simulator serving this download runs on this loop.
        proc = await asyncio.create_subprocess_shell(shell)
        if await proc.wait() != 0:
            raise SystemExit("curl | nhlink-fwup failed")
        curl = time.perf_counter() - start
    if image.read_bytes() != baseline.read_bytes():
        raise SystemExit("daemon and curl|nhlink-fwup images differ")
    for path in (image, baseline, v1.path, v2.path):
        path.unlink()
    return wall, curl, rss


async def main() -> None:
    bus = start_system_bus()
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
    logind = LogindMock(bus)
    try:
        with tempfile.TemporaryDirectory(
            prefix="nhlink-bench-e2e-", dir=os.environ.get("BENCH_DIR")
        ) as d:
            rss = {}
            for mib in (64, 256):
                wall, curl, rss[mib] = await _one(Path(d), mib, bus.address, logind)
                work = wall - REBOOT_DELAY_S
                print(
                    f"{mib:4d} MiB update: daemon push→Reboot {wall:.2f} s, of which "
                    f"{REBOOT_DELAY_S:.1f} s is the configured reboot delay: {work:.2f} s "
                    f"({mib / work:.0f} MiB/s); curl | nhlink-fwup {curl:.2f} s; "
                    f"ratio {work / curl:.2f}"
                )
            print(
                f"daemon peak RSS: 64 MiB firmware {rss[64] / 1024:.1f} MiB, "
                f"256 MiB firmware {rss[256] / 1024:.1f} MiB "
                f"(growth {(rss[256] - rss[64]) / 1024:+.1f} MiB)"
            )
    finally:
        logind.stop()
        bus.stop()


if __name__ == "__main__":
    asyncio.run(main())
