"""A stick pulled in the middle of a copy or an apply: the service in this process, a
umockdev test bed driven from here, the real udev monitor, mount and copy.

Run under the umockdev preload by ``test_media_removal.py``::

    LD_PRELOAD=libumockdev-preload.so.0 python -m tests.media.removal_scenario \\
        CASE WORK DEVNODE CONFIG

``CASE`` is ``copy`` (``nerves-hub/content.fw``, an archive, being copied into the
archives folder) or ``apply`` (``nerves-hub/update.fw``, a firmware, being applied);
``kill`` is ``copy`` with the process SIGKILLed mid-way instead of the stick pulled
(it prints the folder as it was, then dies), and ``restart`` the next start with the
stick still in: the archive offered, decided ``download`` and ready (no gate);
``CONFIG`` says ``HUB_URL`` where the simulator's URL goes. The medium's reader is the
real one with a gate: on the chosen read of the file (an archive: 1 head, 2 the copy,
verified on the way; a firmware: 1 head, 2 verification, 3 the apply) it stops after the
first chunk until the test lets it go, so the removal lands mid-way for sure.
Prints one JSON line: what the service reported and what was left in the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from nhlink_dbus.aio.media_files import MountedMedium
from nhlink_dbus.config import load_config
from nhlink_dbus.core.media import parse_mountinfo
from nhlink_dbus.service import NhlinkService
from nhlink_dbus.service_api import Caller
from nhlink_devtools.hubsim import HubSim
from tests.harness.umockdev import Testbed, usb_stick
from tests.integration.daemon_helpers import DEVICE, sim_config
from tests.service.test_root import Recorder

CHOSEN_READ = {"copy": 2, "apply": 3, "kill": 2, "restart": 0}


class Gate:
    def __init__(self, path: str, chosen: int) -> None:
        self.path = path
        self.chosen = chosen
        self.opens = 0
        self.reached = asyncio.Event()
        self.release = asyncio.Event()


GATE: Gate


class GatedMedium(MountedMedium):
    """The real reader; the chosen read of the gate's file waits after its first chunk."""

    async def chunks(self, path: str) -> AsyncGenerator[bytes, None]:
        number = 0
        if path == GATE.path:
            GATE.opens += 1
            number = GATE.opens
        first = True
        async with contextlib.aclosing(super().chunks(path)) as inner:
            async for chunk in inner:
                yield chunk
                if first and number == GATE.chosen:
                    GATE.reached.set()
                    await GATE.release.wait()
                first = False


def mounted(devnode: str) -> bool:
    entries = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    return any(e.source == devnode for e in entries)


async def scenario(case: str, work: Path, devnode: str, config_path: Path) -> dict[str, Any]:
    global GATE  # one gate per process run
    file = "nerves-hub/update.fw" if case == "apply" else "nerves-hub/content.fw"
    GATE = Gate(file, CHOSEN_READ[case])
    bed = Testbed()
    result: dict[str, Any] = {}
    try:
        async with HubSim(sim_config()) as sim:
            text = config_path.read_text().replace("HUB_URL", sim.ws_url)
            config_path.write_text(text)
            config = load_config(config_path)
            service = await NhlinkService.create(config, media_reader=GatedMedium)
            recorder = Recorder()
            service.add_listener(recorder, decides=True)
            task = asyncio.create_task(service.run())
            try:
                await sim.wait_for_join(DEVICE, timeout=30)
                record, partition = usb_stick(devnode, "ext4")
                bed.add(record)
                folder = Path(config.archives.dir)
                if case == "restart":
                    ((rid, _info),) = await recorder.wait_for("archive_available")
                    service.decide(rid, "download", 0, Caller(0, ":test"))
                    ((_rid, _info, path),) = await recorder.wait_for("archive_ready")
                    result["ready"] = path
                    result["left"] = sorted(p.name for p in folder.iterdir())
                    return result
                if case == "apply":
                    ((rid, _info),) = await recorder.wait_for("update_available")
                    service.decide(rid, "apply", 0, Caller(0, ":test"))
                async with asyncio.timeout(60):
                    await GATE.reached.wait()
                result["mid_way"] = {p.name: p.stat().st_size for p in folder.iterdir()}
                if case == "kill":
                    print(json.dumps(result), flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
                bed.remove(partition)  # pulled, mid-way
                await recorder.wait_for("media_removed")
                GATE.release.set()
                if case == "apply":
                    await recorder.wait_for("update_finished")
                async with asyncio.timeout(60):
                    while mounted(devnode):
                        await asyncio.sleep(0.05)
                result["left"] = sorted(p.name for p in folder.iterdir())
                result["state"] = service.state
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                result["calls"] = [[name, list(args)] for name, args in recorder.calls]
    finally:
        bed.close()
    return result


def main() -> None:
    case, work, devnode, config = sys.argv[1:5]
    os.chdir(work)
    result = asyncio.run(scenario(case, Path(work), devnode, Path(config)))
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
