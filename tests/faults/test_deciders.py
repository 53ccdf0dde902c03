"""Deciders that misbehave, through the real daemon on a private system bus: a UI that
leaves without answering, one that asks and leaves before the reply, and two that
answer the same request at once. Every request still ends in exactly one
``DecisionMade``, and what it says is what happens.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from dbus_next.constants import MessageType
from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_devtools.hubsim import HubSim
from tests.faults.helpers import LinkClient
from tests.harness import LogindMock, PrivateSystemBus
from tests.integration.daemon_helpers import (
    DEVICE,
    Daemon,
    install_complete,
    make_firmware,
    sim_config,
    until,
    write_config,
)

TIMEOUT_MS = 3000


async def _daemon(tmp_path: Path, sim: HubSim, bus: PrivateSystemBus) -> tuple[Daemon, Path]:
    v1 = make_firmware(tmp_path, "1.0.0", 64 << 10)
    v2 = make_firmware(tmp_path, "2.0.0", 64 << 10)
    image = tmp_path / "disk.img"
    install_complete(image, v1)
    cfg = write_config(
        tmp_path,
        ws_url=sim.ws_url,
        image=image,
        extra=f"[decisions]\ntimeout_ms = {TIMEOUT_MS}\n",
    )
    daemon = Daemon(cfg, tmp_path / "daemon.log", bus.address, export_bus=True)
    await sim.wait_for_join(DEVICE, timeout=20)
    return daemon, v2.path


def _clean(daemon: Daemon) -> None:
    text = daemon.text()
    assert "Traceback" not in text and " ERROR " not in text, text[-4000:]


async def test_a_decider_that_leaves_without_answering_changes_nothing(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    async with HubSim(sim_config()) as sim, LinkClient.connect() as watcher:
        daemon, update = await _daemon(tmp_path, sim, system_bus)
        try:
            await watcher.wait_for_service(daemon)
            async with LinkClient.connect() as leaving:
                await sim.offer_update(DEVICE, update)
                request_id, _ = await leaving.wait_signal("UpdateAvailable")
            # gone; a UI that starts now still finds the request, and nobody answers it
            async with LinkClient.connect() as late:
                assert await late.pending() == [request_id]
            made = await watcher.wait_signal("DecisionMade", timeout=TIMEOUT_MS / 1000 + 20)
            assert made == [request_id, "apply", 0, "timeout"]
            await until(logind_mock.reboot_calls, 30, "Reboot", daemon)
        finally:
            assert daemon.stop() == 0, daemon.text()
    _clean(daemon)


async def test_a_decider_that_leaves_before_the_reply_decides_once(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    """The answer is taken if the service could still see who sent it, else refused
    (nobody to grant it to) and the timeout decides: one DecisionMade either way."""
    async with HubSim(sim_config()) as sim, LinkClient.connect() as watcher:
        daemon, update = await _daemon(tmp_path, sim, system_bus)
        try:
            await watcher.wait_for_service(daemon)
            await sim.offer_update(DEVICE, update)
            request_id, _ = await watcher.wait_signal("UpdateAvailable")
            async with LinkClient.connect() as leaving:
                sender = leaving.bus.unique_name
                await leaving.bus.send(
                    Message(
                        destination=names.BUS_NAME,
                        path=names.OBJECT_PATH,
                        interface=names.INTERFACE,
                        member="Decide",
                        signature="sst",
                        body=[request_id, "ignore", 0],
                    )
                )
            made = await watcher.wait_signal("DecisionMade", timeout=TIMEOUT_MS / 1000 + 20)
            assert made in (
                [request_id, "ignore", 0, f"uid=0 {sender}"],
                [request_id, "apply", 0, "timeout"],
            ), made
            if made[1] == "apply":
                assert (await watcher.wait_signal("UpdateFinished", timeout=60))[1] is True
            else:
                await asyncio.sleep(0.5)
                assert await watcher.get("State") == "idle"
                assert watcher.of("UpdateFinished") == []
            assert len(watcher.of("DecisionMade")) == 1
        finally:
            assert daemon.stop() == 0, daemon.text()
    _clean(daemon)


async def test_two_deciders_racing_one_wins_and_is_obeyed(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    async with (
        HubSim(sim_config()) as sim,
        LinkClient.connect() as first,
        LinkClient.connect() as second,
    ):
        daemon, update = await _daemon(tmp_path, sim, system_bus)
        try:
            await first.wait_for_service(daemon)
            rounds = 5
            for n in range(1, rounds + 1):
                await sim.offer_update(DEVICE, update)
                request_id, _ = await first.wait_signal("UpdateAvailable", count=n)
                await second.wait_signal("UpdateAvailable", count=n)
                # the last round races apply against ignore; the others ignore twice
                decisions = ("apply", "ignore") if n == rounds else ("ignore", "ignore")
                replies = await asyncio.gather(
                    first.decide(request_id, decisions[0]), second.decide(request_id, decisions[1])
                )
                kinds = [r.message_type for r in replies]
                assert sorted(k.name for k in kinds) == ["ERROR", "METHOD_RETURN"], replies
                (loser,) = [r for r in replies if r.message_type == MessageType.ERROR]
                assert loser.error_name == names.ERROR_PREFIX + "UnknownRequest"
                winner = kinds.index(MessageType.METHOD_RETURN)
                by = (first, second)[winner].bus.unique_name
                for ui in (first, second):
                    made = await ui.wait_signal("DecisionMade", count=n)
                    assert made == [request_id, decisions[winner], 0, f"uid=0 {by}"]
            if decisions[winner] == "apply":
                assert (await first.wait_signal("UpdateFinished", timeout=60))[1] is True
                await until(logind_mock.reboot_calls, 30, "Reboot", daemon)
            else:
                await asyncio.sleep(0.5)
                assert first.of("UpdateFinished") == []
                assert await first.get("State") == "idle"
            assert len(first.of("DecisionMade")) == rounds
        finally:
            assert daemon.stop() == 0, daemon.text()
    _clean(daemon)
