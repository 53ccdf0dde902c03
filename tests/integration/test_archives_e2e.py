"""Issue 10, from the hub: archives end to end with the real daemon on a private system
bus and nhlink-hub-sim.

``archive`` push → ``ArchiveAvailable`` (no URL, ``source`` hub) → ``Decide download`` →
the download (cut once, resumed with Range) into ``<dir>/<uuid>.fw.part``, verified,
renamed → ``ArchiveReady`` with a file whose sha256 is the served one, 0640 in a 0750
folder; ``GetArchives`` and ``nhlinkctl archives`` list it; offered again, it is ready
without a second download. ``ignore``, the timeout default and ``reschedule`` (same id);
wrongly signed and unsigned archives never become ready and leave no file."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from pathlib import Path

from nhlink_devtools.hubsim import HubSim
from tests.harness import LogindMock, PrivateSystemBus, system_bus_connection
from tests.harness.link_client import LinkClient
from tests.integration.archive_helpers import (
    WRONG_KEY,
    daemon_on_bus,
    make_archive,
    running_device,
    sha256,
)
from tests.integration.daemon_helpers import DEVICE, sim_config

NHLINKCTL = str(Path(sys.executable).parent / "nhlinkctl")
GROUP = "nogroup"  # exists on Debian; the archives' group


def archive_requests(sim: HubSim, uuid: str) -> list[object]:
    return [e for e in sim.http_log if e.path == f"/archives/{uuid}.fw"]


async def test_download_resumes_verifies_and_is_ready_once(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _fw, image = running_device(tmp_path)
    archive, uuid = make_archive(tmp_path, "maps", size=3 << 20)
    folder = tmp_path / "archives"
    async with HubSim(sim_config()) as sim, system_bus_connection() as bus:
        client = await LinkClient(bus).start()
        extra = f'[decisions]\ntimeout_ms = 60000\ngroup = "{GROUP}"\n'
        async with daemon_on_bus(tmp_path, system_bus, client, sim, image, extra=extra) as daemon:
            assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o750
            # the first response is cut after 1 MiB: the download must resume with Range
            sim.set_fault(kind="cut", path=f"/archives/{uuid}.fw", after=1 << 20, times=1)
            payload = await sim.offer_archive(DEVICE, archive)

            ((rid, info),) = await client.wait_for("ArchiveAvailable", log=daemon.text)
            assert rid.startswith("a-")
            assert info["uuid"] == uuid and info["source"] == "hub"
            assert info["size"] == archive.stat().st_size and info["version"] == "1.0.0"
            assert "url" not in info and not any("X-Amz" in str(v) for v in info.values())
            await client.call("Decide", "sst", [rid, "download", 0])

            ((rid2, info2, path),) = await client.wait_for("ArchiveReady", log=daemon.text)
            assert (rid2, info2["uuid"]) == (rid, uuid)
            assert path == str(folder / f"{uuid}.fw")
            assert sha256(Path(path)) == sha256(archive)
            requests = archive_requests(sim, uuid)
            assert len(requests) == 2
            assert requests[0].range is None  # type: ignore[attr-defined]
            resumed = requests[1].range  # type: ignore[attr-defined]
            assert resumed is not None and resumed.startswith("bytes=")
            assert int(resumed.removeprefix("bytes=").split("-")[0]) >= 1 << 20
            assert sorted(os.listdir(folder)) == [f"{uuid}.fw"]  # no .part left
            st = Path(path).stat()
            assert stat.S_IMODE(st.st_mode) == 0o640
            assert (st.st_uid, st.st_gid) == (0, grp.getgrnam(GROUP).gr_gid)
            assert folder.stat().st_gid == grp.getgrnam(GROUP).gr_gid

            (listed,) = await client.call("GetArchives")
            assert listed == [[path, info2]]
            ctl = subprocess.run(
                [NHLINKCTL, "archives"],
                env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": system_bus.address},
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            assert ctl.stdout.startswith(f"{path}  version 1.0.0 (")

            # The hub offers it again (as on every join): ready, decided by policy,
            # and not downloaded again.
            await sim.push(DEVICE, "archive", payload)
            ready = await client.wait_for("ArchiveReady", count=2, log=daemon.text)
            assert ready[1][2] == path and ready[1][0] != rid
            made = [d for d in client.named("DecisionMade") if d[0] == ready[1][0]]
            assert made == [[ready[1][0], "download", 0, "policy"]]
            assert len(client.named("ArchiveAvailable")) == 1
            assert len(archive_requests(sim, uuid)) == 2

        # After a restart the shelf is read from the folder.
        async with daemon_on_bus(tmp_path, system_bus, client, sim, image, log="daemon2.log"):
            (listed,) = await client.call("GetArchives")
            assert [p for p, _info in listed] == [path]
            assert listed[0][1]["uuid"] == uuid and listed[0][1]["version"] == "1.0.0"
            Path(path).unlink()  # an application deleted what it has used
            assert await client.call("GetArchives") == [[]]


async def test_ignore_reschedule_and_timeout(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _fw, image = running_device(tmp_path)
    ignored, ignored_uuid = make_archive(tmp_path, "ignored")
    later, later_uuid = make_archive(tmp_path, "later")
    folder = tmp_path / "archives"
    async with HubSim(sim_config()) as sim, system_bus_connection() as bus:
        client = await LinkClient(bus).start()
        async with daemon_on_bus(tmp_path, system_bus, client, sim, image) as daemon:
            await sim.offer_archive(DEVICE, ignored)
            ((rid, _info),) = await client.wait_for("ArchiveAvailable", log=daemon.text)
            await client.call("Decide", "sst", [rid, "ignore", 0])
            await client.wait_for("DecisionMade", lambda d: d[:2] == [rid, "ignore"])

            await sim.offer_archive(DEVICE, later)
            ((rid2, _),) = await client.wait_for(
                "ArchiveAvailable", lambda a: a[1]["uuid"] == later_uuid
            )
            await client.call("Decide", "sst", [rid2, "reschedule", 300])
            again = await client.wait_for(
                "ArchiveAvailable", lambda a: a[1]["uuid"] == later_uuid, count=2
            )
            assert again[1][0] == rid2  # the same request id
            await client.call("Decide", "sst", [rid2, "download", 0])
            ((_rid, _info, path),) = await client.wait_for("ArchiveReady", log=daemon.text)
            assert path == str(folder / f"{later_uuid}.fw")
            assert archive_requests(sim, ignored_uuid) == []  # ignored: never fetched
            assert sorted(os.listdir(folder)) == [f"{later_uuid}.fw"]

        # Nobody answers: the default (ignore) after decisions.timeout_ms.
        quick = "[decisions]\ntimeout_ms = 300\n"
        async with daemon_on_bus(
            tmp_path, system_bus, client, sim, image, log="daemon2.log", extra=quick
        ) as daemon:
            await sim.offer_archive(DEVICE, ignored)
            asked = await client.wait_for(
                "ArchiveAvailable", lambda a: a[1]["uuid"] == ignored_uuid, count=2
            )
            rid3 = asked[1][0]
            assert rid3 != rid  # a new start, a new request id
            ((*_, by),) = await client.wait_for(
                "DecisionMade", lambda d: d[:2] == [rid3, "ignore"], log=daemon.text
            )
            assert by == "timeout"
            assert archive_requests(sim, ignored_uuid) == []


async def test_wrongly_signed_and_unsigned_archives_never_become_ready(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _fw, image = running_device(tmp_path)
    wrong, wrong_uuid = make_archive(tmp_path, "wrong", key=WRONG_KEY)
    unsigned, unsigned_uuid = make_archive(tmp_path, "unsigned", key=None)
    folder = tmp_path / "archives"
    async with HubSim(sim_config()) as sim, system_bus_connection() as bus:
        client = await LinkClient(bus).start()
        async with daemon_on_bus(tmp_path, system_bus, client, sim, image) as daemon:
            for archive, uuid in ((wrong, wrong_uuid), (unsigned, unsigned_uuid)):
                await sim.offer_archive(DEVICE, archive)
                ((rid, _),) = await client.wait_for(
                    "ArchiveAvailable",
                    lambda a, u=uuid: a[1]["uuid"] == u,  # type: ignore[misc]
                )
                await client.call("Decide", "sst", [rid, "download", 0])
                await client.wait_for(
                    "Error",
                    lambda e, u=uuid: u in e[0],
                    log=daemon.text,  # type: ignore[misc]
                )
                assert len(archive_requests(sim, uuid)) == 1  # it was downloaded, then refused
            errors = [e[0] for e in client.named("Error")]
            assert any("digital signature verification" in e for e in errors), errors
            assert any("Expecting signed firmware archive" in e for e in errors), errors
            assert client.named("ArchiveReady") == []
            assert os.listdir(folder) == []  # no .fw, no .part
            (listed,) = await client.call("GetArchives")
            assert listed == []
