"""Issue 10's members of org.nerveshub.Link1 through a real (private) system bus:
GetArchives, MediaAdded, MediaRemoved; and nhlinkctl archives / watch."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from dbus_next.aio.message_bus import MessageBus
from dbus_next.signature import Variant

from nhlink_dbus import ctl
from nhlink_dbus.bus.server import BusFace
from nhlink_dbus.service_api import ReadyArchive
from tests.bus.fake_service import FakeLinkService
from tests.bus.helpers import SignalRecorder, body_of, call
from tests.bus.test_ctl import nhlinkctl, wait_for

PATH = "/var/lib/nhlink/archives/4b1d.fw"
INFO = {"uuid": "4b1d", "version": "2.1", "size": 1234, "source": "removable"}


async def test_get_archives(client: MessageBus, service: FakeLinkService) -> None:
    assert body_of(await call(client, "GetArchives")) == [[]]
    service.archives.append(ReadyArchive(PATH, {**INFO, "url": "https://x/y?sig=1"}))
    [archives] = body_of(await call(client, "GetArchives"))
    assert archives == [
        [
            PATH,
            {
                "uuid": Variant("s", "4b1d"),
                "version": Variant("s", "2.1"),
                "size": Variant("x", 1234),
                "source": Variant("s", "removable"),
            },
        ]
    ]


async def test_media_signals(client: MessageBus, service: FakeLinkService) -> None:
    signals = await SignalRecorder(client).start()
    (face,) = service.listeners
    face.media_added("/dev/sdb1", "/run/nhlink/media/sdb1", 3)
    face.media_removed("/dev/sdb1")
    got = [await signals.next() for _ in range(2)]
    assert [(m.member, m.signature, m.body) for m in got] == [
        ("MediaAdded", "ssu", ["/dev/sdb1", "/run/nhlink/media/sdb1", 3]),
        ("MediaRemoved", "s", ["/dev/sdb1"]),
    ]


async def test_nhlinkctl_archives(face: BusFace, service: FakeLinkService) -> None:
    assert await nhlinkctl("archives") == (0, "no archives ready\n", "")
    service.archives.append(ReadyArchive(PATH, INFO))
    status, out, _ = await nhlinkctl("archives")
    assert status == 0
    assert out == f"{PATH}  version 2.1 (size 1234, source removable, uuid 4b1d)\n"
    status, out, _ = await nhlinkctl("--json", "archives")
    assert json.loads(out) == [{"path": PATH, "info": INFO}]


async def test_nhlinkctl_watch_shows_media(face: BusFace, service: FakeLinkService) -> None:
    out = io.StringIO()
    task = asyncio.create_task(ctl.run(["watch"], out, io.StringIO()))
    try:
        await wait_for(lambda: "state" in out.getvalue())
        service.listeners[0].media_added("/dev/sdb1", "/run/nhlink/media/sdb1", 2)
        service.listeners[0].media_added("/dev/sdc1", "", 0)
        service.listeners[0].media_removed("/dev/sdb1")
        await wait_for(lambda: "removed" in out.getvalue())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert out.getvalue().splitlines()[1:] == [
        "medium /dev/sdb1 at /run/nhlink/media/sdb1: 2 .fw file(s) to check",
        "medium /dev/sdc1: 0 .fw file(s) to check",
        "medium /dev/sdb1 removed",
    ]
