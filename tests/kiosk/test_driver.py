"""The driver between a prompt's bus binding and its Prompt: effects performed through the
port, a stale owner lookup dropped, replies mapped, redraws and the countdown's timer."""

from __future__ import annotations

import logging

import pytest

from nhlink_kiosk.driver import TICK_S, Driver
from nhlink_kiosk.prompt import (
    ERROR_UNKNOWN_REQUEST,
    Action,
    CallDecide,
    Prompt,
    View,
)

OWNER = ":1.5"


class FakePort:
    def __init__(self) -> None:
        self.decides: list[CallDecide] = []
        self.loads: list[str] = []
        self.views: list[View] = []
        self.ticks: list[float | None] = []

    def call_decide(self, call: CallDecide) -> None:
        self.decides.append(call)

    def load_pending(self, owner: str) -> None:
        self.loads.append(owner)

    def render(self, view: View) -> None:
        self.views.append(view)

    def tick_in(self, seconds: float | None) -> None:
        self.ticks.append(seconds)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def driver() -> tuple[Driver, FakePort, Clock]:
    port, clock = FakePort(), Clock()
    return Driver(Prompt(60_000, "user x (uid 7)"), port, clock), port, clock


def test_the_owner_is_looked_up_then_followed() -> None:
    d, port, _ = driver()
    d.connected(":1.9")
    token = d.owner_lookup()
    d.owner_found(token, OWNER)
    assert port.loads == [OWNER]
    assert port.views[-1] == View()
    d.owner_changed("")
    d.owner_changed(":1.6")
    assert port.loads == [OWNER, ":1.6"]


def test_a_lookup_overtaken_by_a_name_owner_change_is_dropped() -> None:
    d, port, _ = driver()
    token = d.owner_lookup()
    d.owner_changed(":1.6")  # arrives before the (older) GetNameOwner reply
    d.owner_found(token, OWNER)
    assert port.loads == [":1.6"]
    assert d.prompt.owner == ":1.6"


def test_an_offer_is_drawn_and_a_key_calls_decide(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "nhlink_kiosk")
    d, port, _ = driver()
    d.owner_found(d.owner_lookup(), OWNER)
    d.pending_replied(OWNER, "", "", [("u-1", "update", {"version": "2"})])
    assert port.views[-1].title == "Software update — update available"
    d.press(Action.LATER)
    assert port.decides == [CallDecide(OWNER, "u-1", "reschedule", 60_000)]
    assert "Decide u-1 reschedule 60000" in caplog.messages
    d.decide_replied(port.decides[0], ERROR_UNKNOWN_REQUEST, "decided already")
    assert not port.views[-1].visible
    d.press(Action.INSTALL)
    assert "pressed install (nothing to ask)" in caplog.messages
    assert len(port.decides) == 1


def test_not_allowed_from_the_pending_reply(caplog: pytest.LogCaptureFixture) -> None:
    d, port, _ = driver()
    d.owner_found(d.owner_lookup(), OWNER)
    d.pending_replied(OWNER, "org.freedesktop.DBus.Error.AccessDenied", "Rejected")
    d.signal(OWNER, "UpdateAvailable", ["u-1", {}])
    assert port.views[-1].title == "Software update — not allowed to decide"
    assert any(r.levelno == logging.ERROR and "Not allowed" in r.message for r in caplog.records)


def test_a_countdown_keeps_the_timer_running_until_it_ends() -> None:
    d, port, clock = driver()
    d.owner_found(d.owner_lookup(), OWNER)
    d.signal(OWNER, "RebootScheduled", [2000])
    assert port.ticks[-1] == TICK_S
    clock.now += 1.2
    d.refresh()
    assert (port.views[-1].countdown, port.ticks[-1]) == ("Restarting in 1 s", TICK_S)
    clock.now += 1.0
    d.refresh()
    assert (port.views[-1].countdown, port.ticks[-1]) == ("Restarting now…", None)
