"""``Decide`` flooded with 1,000 bad calls per second from an allowed caller (root)
and 1,000 from one nobody allows (uid 65534), while an update is decided, downloaded
and applied: the service answers every call, keeps answering another UI, and the
update completes.

Two ways the unallowed caller is stopped: by the shipped bus policy (its calls never
reach the service), and, with a mistaken drop-in that opens the methods to
everyone, by the service's own check (each call costs it a credentials lookup).

The latency bound. Another UI's calls (``GetPendingRequests`` and ``Get State``,
one every 20 ms) are timed during the flood; the issue asks for 50 ms at the 99th
percentile. The service spends about 0.35 ms of CPU on a bad call (dbus-next's
marshalling is most of it), so 2,000 a second need most of a core: where it gets
one, the figure holds; ``bench/bench_decide_flood.py`` measures it (README). This
test runs beside the rest of ``make test`` and other work on two shared cores,
where the service may get a tenth of a core: then the bus daemon refuses what
exceeds 128 calls waiting per flooder (``LimitsExceeded``), and another UI's call
waits behind up to 256 flood calls, hundreds of milliseconds. So the test asserts
generous bounds (median under 250 ms, no call slower than 5 s, answers all
along; with some 40 samples a p99 is the slowest call, and that is one scheduler
hiccup on a busy machine): it catches a service that stops answering or lets the
flood starve everyone else, not a slow machine. It prints the figures it saw.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest
from dbus_next.constants import MessageType

from nhlink_dbus import names
from nhlink_devtools.hubsim import HubSim
from tests.bus.conftest import NOBODY
from tests.bus.test_access import PERMISSIVE
from tests.faults.helpers import LinkClient, flooder_result, start_flooder, timed_calls
from tests.harness import LogindMock, PrivateSystemBus
from tests.integration.daemon_helpers import (
    DEVICE,
    Daemon,
    device_with_update,
    sim_config,
    until,
    write_config,
)

RATE = 1000  # bad calls per second, per flooder
FLOOD_S = 6.0
MEDIAN_BOUND_S = 0.25  # generous: see the module docstring
MAX_BOUND_S = 5.0
LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"


# The opened policy (the service's own refusal under load) is the same run again:
# in make test-long, to keep make test short.
@pytest.mark.parametrize("policy", ["shipped", pytest.param("opened", marks=pytest.mark.long)])
async def test_a_flood_of_bad_decides_leaves_others_answered_and_the_update_going(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock, policy: str
) -> None:
    if policy == "opened":
        await asyncio.to_thread(system_bus.add_policy, "zz-permissive-test.conf", PERMISSIVE)
    _v1, v2, image = device_with_update(tmp_path)
    async with HubSim(sim_config()) as sim, LinkClient.connect() as ui:
        cfg = write_config(
            tmp_path, ws_url=sim.ws_url, image=image, extra="[decisions]\ntimeout_ms = 60000\n"
        )
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)
        try:
            await sim.wait_for_join(DEVICE, timeout=20)
            await ui.wait_for_service(daemon)
            allowed = await start_flooder(system_bus, None, RATE, FLOOD_S)
            unallowed = await start_flooder(system_bus, NOBODY, RATE, FLOOD_S)
            flood_end = time.monotonic() + FLOOD_S
            timing = asyncio.create_task(timed_calls(ui, flood_end))
            await asyncio.sleep(1.0)  # the flood is on: now the update comes
            await sim.offer_update(DEVICE, v2.path)
            request_id, _ = await ui.wait_signal("UpdateAvailable")
            decided = await ui.decide(request_id, "apply")
            assert decided.message_type == MessageType.METHOD_RETURN, decided.body
            finished = await ui.wait_signal("UpdateFinished", timeout=60)
            latencies = await timing
            results = [await flooder_result(allowed), await flooder_result(unallowed)]
            assert finished[:2] == [request_id, True]
            await until(logind_mock.reboot_calls, 30, "Reboot", daemon)
        finally:
            assert daemon.stop() == 0, daemon.text()
    shipped = policy == "shipped"
    denied = names.DBUS_ERROR_ACCESS_DENIED if shipped else names.ERROR_PREFIX + "AccessDenied"
    for result, answer in zip(
        results, [names.ERROR_PREFIX + "UnknownRequest", denied], strict=True
    ):
        sent, answers = int(result["sent"]), dict(result["answers"])  # type: ignore[call-overload]
        print(f"flood ({policy} policy): {sent} calls, answered {answers}")
        # the flooders share the cores too: on a busy machine they fall a little short
        assert sent / float(result["seconds"]) >= RATE * 0.6, result  # type: ignore[arg-type]
        # Every call answered: by its handler, or by the bus daemon's limit of 128 calls
        # waiting per connection (the bus's own defence; never a silent drop).
        assert sum(answers.values()) == sent, result
        assert set(answers) <= {answer, LIMITS_EXCEEDED} and answers.get(answer), result
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"flood ({policy} policy): {len(latencies)} calls by another UI, median "
        f"{statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms"
    )
    assert len(latencies) >= FLOOD_S / 0.5  # it kept answering throughout
    assert statistics.median(latencies) <= MEDIAN_BOUND_S and latencies[-1] <= MAX_BOUND_S
    assert "Traceback" not in daemon.text()
