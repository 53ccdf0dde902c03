"""The prompts' shared rules (nhlink_kiosk.prompt): formatting, the owner and request-id
rules, keys, decisions, an update's run, "not allowed". Synchronous, no bus, no toolkit."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nhlink_dbus import names
from nhlink_kiosk import prompt as p
from nhlink_kiosk.prompt import Action, CallDecide, LoadPending, Prompt, Report

OWNER = ":1.5"
ME = ":1.9"
LATER_MS = 900_000
UPDATE_INFO: dict[str, object] = {
    "product": "kiosk-fw",
    "version": "2.0.0",
    "size": 4_200_000,
    "source": "hub",
    "description": "Faster start-up.\nNew fonts.",
}


def started(
    owner: str = OWNER, pending: list[tuple[str, str, dict[str, object]]] | None = None
) -> Prompt:
    prompt = Prompt(LATER_MS, "user kiosk (uid 1001)")
    prompt.connected(ME)
    assert prompt.name_owner(owner)[-1] == LoadPending(owner)
    prompt.pending_loaded(owner, pending or [])
    return prompt


def offer(
    prompt: Prompt, rid: str = "u-a-1", info: dict[str, object] | None = None, sender: str = OWNER
) -> list[Any]:
    return prompt.signal(sender, "UpdateAvailable", [rid, info or UPDATE_INFO], 0.0)


def decided(
    prompt: Prompt, rid: str, decision: str, by: str, delay: int = 0, now: float = 0.0
) -> list[Any]:
    return prompt.signal(OWNER, "DecisionMade", [rid, decision, delay, by], now)


def decides(effects: list[Any]) -> list[CallDecide]:
    return [e for e in effects if isinstance(e, CallDecide)]


# -- formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (999, "999 bytes"),
        (1000, "1.0 kB"),
        (4_200_000, "4.2 MB"),
        (999_949_999, "999.9 MB"),
        (999_950_000, "1.0 GB"),
        (3 * 10**15, "3000.0 TB"),
        (-1, ""),
        (True, ""),
        ("12", ""),
        (None, ""),
    ],
)
def test_format_size(size: object, text: str) -> None:
    assert p.format_size(size) == text


def test_offer_rows_name_and_description() -> None:
    assert p.offer_rows(UPDATE_INFO) == (
        ("Product", "kiosk-fw"),
        ("Version", "2.0.0"),
        ("Size", "4.2 MB"),
        ("Source", "NervesHub"),
    )
    assert p.offer_rows({"source": "removable"}) == (("Source", "Removable media"),)
    assert p.offer_rows({"source": "elsewhere", "version": True}) == (("Source", "elsewhere"),)
    assert p.offer_name(p.UPDATE, UPDATE_INFO) == "kiosk-fw 2.0.0"
    assert p.offer_name(p.UPDATE, {}) == "Firmware update"
    assert p.offer_name(p.ARCHIVE, {"version": "3"}) == "3"
    assert p.offer_name(p.ARCHIVE, {}) == "Archive"
    # Hub text on one line, without control characters; paragraphs of a description kept.
    assert p.offer_rows({"product": "a\nb\x1b[2J\tc"}) == (("Product", "a b\x1b[2J c"),)
    assert p.description({"description": " one\x07\n\ntwo\x1b "}) == "one\n\ntwo"
    assert p.description({"description": 5}) == ""


def test_decided_by_me() -> None:
    assert p.decided_by_me(f"uid=1001 {ME}", ME)
    assert not p.decided_by_me("uid=1001 :1.90", ME)
    assert not p.decided_by_me("timeout", ME)
    assert not p.decided_by_me("uid=0 :1.9", "")


def test_names_are_the_services() -> None:
    assert (p.BUS_NAME, p.OBJECT_PATH, p.INTERFACE) == (
        names.BUS_NAME,
        names.OBJECT_PATH,
        names.INTERFACE,
    )
    assert (p.DBUS_NAME, p.DBUS_PATH, p.DBUS_INTERFACE) == (
        names.DBUS_NAME,
        names.DBUS_PATH,
        names.DBUS_INTERFACE,
    )
    assert p.ERROR_UNKNOWN_REQUEST == names.ERROR_PREFIX + "UnknownRequest"
    assert {
        names.DBUS_ERROR_ACCESS_DENIED,
        names.ERROR_PREFIX + "AccessDenied",
    } == p.ACCESS_DENIED_ERRORS


def test_later_delay_must_be_positive() -> None:
    with pytest.raises(ValueError, match="later_delay_ms"):
        Prompt(0, "x")


# -- the owner and request ids ---------------------------------------------------------------


def test_nothing_is_shown_before_an_offer() -> None:
    prompt = Prompt(LATER_MS, "x")
    assert prompt.view(0.0) == p.View()
    assert prompt.name_owner("") == []  # no change
    assert prompt.press(Action.INSTALL) == []


def test_signals_from_anyone_but_the_owner_are_dropped() -> None:
    prompt = started()
    assert offer(prompt, sender=":1.77") == []
    assert offer(prompt, sender="") == []
    assert not prompt.view(0.0).visible
    offer(prompt)
    assert prompt.signal(":1.77", "DecisionMade", ["u-a-1", "ignore", 0, "timeout"], 0.0) == []
    assert prompt.pending_ids() == ["u-a-1"]


def test_a_new_owner_forgets_the_old_requests_and_reads_its_own() -> None:
    prompt = started()
    offer(prompt, "u-a-1")
    assert prompt.view(0.0).visible
    assert prompt.name_owner("") == [Report("info", f"{p.BUS_NAME} is not running; waiting for it")]
    assert not prompt.view(0.0).visible
    assert prompt.press(Action.INSTALL) == []  # nothing to answer, nobody to ask
    assert prompt.name_owner(":1.6") == [
        Report("info", f"{p.BUS_NAME} is :1.6"),
        LoadPending(":1.6"),
    ]
    assert prompt.pending_ids() == []
    # The old owner's reply arrives late: dropped.
    assert prompt.pending_loaded(OWNER, [("u-a-1", "update", UPDATE_INFO)]) == []
    prompt.pending_loaded(":1.6", [("u-b-1", "update", UPDATE_INFO)])
    assert prompt.pending_ids() == ["u-b-1"]
    assert decides(prompt.press(Action.INSTALL)) == [CallDecide(":1.6", "u-b-1", "apply", 0)]


def test_a_decide_in_flight_is_forgotten_with_its_owner() -> None:
    prompt = started()
    offer(prompt, "u-a-1")
    assert decides(prompt.press(Action.INSTALL)) == [CallDecide(OWNER, "u-a-1", "apply", 0)]
    prompt.name_owner(":1.6")
    prompt.pending_loaded(":1.6", [("u-b-1", "update", UPDATE_INFO)])
    # The old owner's answer (an error: it is gone) changes nothing for the new one.
    assert (
        prompt.call_failed(
            OWNER, "Decide", "org.freedesktop.DBus.Error.ServiceUnknown", "", "u-a-1"
        )
        == []
    )
    assert prompt.decide_done(OWNER, "u-a-1") == []
    assert decides(prompt.press(Action.SKIP)) == [CallDecide(":1.6", "u-b-1", "ignore", 0)]


def test_a_pending_reply_that_crossed_a_decision_does_not_bring_it_back() -> None:
    prompt = Prompt(LATER_MS, "x")
    prompt.connected(ME)
    prompt.name_owner(OWNER)
    offer(prompt, "u-a-1")
    decided(prompt, "u-a-1", "ignore", "uid=0 :1.3")
    prompt.pending_loaded(OWNER, [("u-a-1", "update", UPDATE_INFO)])  # asked before the decision
    assert prompt.pending_ids() == []
    # ... but the same id offered again (after a reschedule) is shown again.
    offer(prompt, "u-a-1", {"version": "2.0.1"})
    assert prompt.pending_ids() == ["u-a-1"]
    assert prompt.view(0.0).subheading == "2.0.1"


def test_offers_queue_and_a_repeated_offer_updates_in_place() -> None:
    prompt = started(pending=[("a-a-1", "archive", {"version": "7"})])
    offer(prompt, "u-a-2")
    offer(prompt, "u-a-2", {"version": "2.0.2"})
    prompt.signal(OWNER, "ArchiveAvailable", ["a-a-3", {}], 0.0)
    assert prompt.pending_ids() == ["a-a-1", "u-a-2", "a-a-3"]
    assert prompt.view(0.0).title == "Software update — archive available"
    decided(prompt, "a-a-1", "download", f"uid=1 {ME}")
    assert prompt.view(0.0).subheading == "2.0.2"
    assert prompt.signal(OWNER, "UpdateAvailable", ["x", {}, "extra"], 0.0)[0].level == "warning"
    prompt.pending_loaded(OWNER, [("m-a-9", "media", {})])  # a kind this prompt does not know
    assert prompt.pending_ids() == ["u-a-2", "a-a-3"]


# -- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "action", "decision", "delay"),
    [
        ("update", Action.INSTALL, "apply", 0),
        ("update", Action.LATER, "reschedule", LATER_MS),
        ("update", Action.CLOSE, "reschedule", LATER_MS),
        ("update", Action.SKIP, "ignore", 0),
        ("archive", Action.INSTALL, "download", 0),
        ("archive", Action.LATER, "reschedule", LATER_MS),
        ("archive", Action.SKIP, "ignore", 0),
    ],
)
def test_keys_answer_the_shown_offer(kind: str, action: Action, decision: str, delay: int) -> None:
    prompt = started(pending=[("r-1", kind, {})])
    assert decides(prompt.press(action)) == [CallDecide(OWNER, "r-1", decision, delay)]


def test_one_decide_at_a_time() -> None:
    prompt = started()
    offer(prompt, "u-a-1")
    view = prompt.view(0.0)
    assert [(b.label, b.enabled, b.default) for b in view.buttons] == [
        ("_Skip", True, False),
        ("_Later", True, False),
        ("_Install now", True, True),
    ]
    assert decides(prompt.press(Action.INSTALL))
    assert prompt.press(Action.INSTALL) == []
    assert not any(b.enabled for b in prompt.view(0.0).buttons)
    prompt.decide_done(OWNER, "u-a-1")
    assert all(b.enabled for b in prompt.view(0.0).buttons)


def test_an_unknown_request_answer_drops_the_offer() -> None:
    prompt = started()
    offer(prompt, "u-a-1")
    prompt.press(Action.LATER)
    effects = prompt.call_failed(OWNER, "Decide", p.ERROR_UNKNOWN_REQUEST, "gone", "u-a-1")
    assert effects == [Report("info", "u-a-1 is no longer pending")]
    assert not prompt.view(0.0).visible


def test_another_decide_error_is_shown_and_the_buttons_come_back() -> None:
    prompt = started()
    offer(prompt, "u-a-1")
    prompt.press(Action.INSTALL)
    error = names.ERROR_PREFIX + "NotPossible"
    assert prompt.call_failed(OWNER, "Decide", error, "busy", "u-a-1")[0].level == "error"
    view = prompt.view(0.0)
    assert view.lines == (p.Line("error", "busy"),)
    assert all(b.enabled for b in view.buttons)
    assert decides(prompt.press(Action.INSTALL))
    assert prompt.view(0.0).lines == ()


# -- decisions and the update's run ---------------------------------------------------------------


def test_my_apply_shows_the_progress_then_the_countdown() -> None:
    prompt = started()
    offer(prompt, "u-a-1")
    prompt.press(Action.INSTALL)
    decided(prompt, "u-a-1", "apply", f"uid=1001 {ME}")
    prompt.decide_done(OWNER, "u-a-1")
    view = prompt.view(0.0)
    assert (view.title, view.progress, view.buttons) == ("Software update — installing 0 %", 0, ())
    assert view.subheading == "kiosk-fw 2.0.0"
    assert view.lines == (p.Line("info", "Please keep the device switched on."),)
    assert prompt.press(Action.LATER) == []  # keys do nothing while installing
    prompt.signal(OWNER, "FwupProgress", [57], 0.0)
    prompt.signal(OWNER, "FwupMessage", ["warning", 0, "Upgrading partition B"], 0.0)
    prompt.signal(OWNER, "FwupMessage", ["ok", 0, "Success!"], 0.0)
    view = prompt.view(0.0)
    assert view.title == "Software update — installing 57 %"
    assert view.lines[0] == p.Line("note", "Upgrading partition B")
    prompt.signal(OWNER, "FwupProgress", [100], 0.0)
    prompt.signal(OWNER, "UpdateFinished", ["u-a-1", True, ""], 0.0)
    view = prompt.view(0.0)
    assert (view.title, view.progress) == ("Software update — installed", 100)
    prompt.signal(OWNER, "RebootScheduled", [5000], 10.0)
    view = prompt.view(10.2)
    assert (view.title, view.countdown, view.ticking) == (
        "Software update — restarting in 5 s",
        "Restarting in 5 s",
        True,
    )
    view = prompt.view(15.0)
    assert (view.title, view.countdown, view.ticking) == (
        "Software update — restarting",
        "Restarting now…",
        False,
    )
    # The service goes away for the reboot: the countdown stays; a new service ends it.
    prompt.name_owner("")
    assert prompt.view(15.0).countdown == "Restarting now…"
    prompt.name_owner(":1.6")
    assert not prompt.view(15.0).visible


def test_another_screens_decision_closes_the_dialog() -> None:
    prompt = started()
    offer(prompt, "u-a-1")
    decided(prompt, "u-a-1", "reschedule", "uid=0 :1.3", 60_000)
    assert not prompt.view(0.0).visible
    offer(prompt, "u-a-1")
    decided(prompt, "u-a-1", "apply", "uid=0 :1.3")
    view = prompt.view(0.0)
    assert view.title == "Software update — installing 0 %"
    assert view.lines[0] == p.Line("info", "Decided on another screen (uid=0 :1.3).")


@pytest.mark.parametrize(
    ("by", "line"),
    [
        ("timeout", "Installed automatically: nobody answered in time."),
        ("policy", "Installed by the device's policy."),
    ],
)
def test_automatic_decisions_say_so(by: str, line: str) -> None:
    prompt = started()
    offer(prompt, "u-a-1")
    decided(prompt, "u-a-1", "apply", by)
    assert prompt.view(0.0).lines[0] == p.Line("info", line)


def test_a_prompt_started_mid_update_joins_in() -> None:
    prompt = started()
    prompt.signal(OWNER, "FwupProgress", [140], 0.0)
    view = prompt.view(0.0)
    assert (view.progress, view.subheading) == (100, "Firmware update")


def test_a_failed_update_is_shown_until_closed_then_the_next_offer() -> None:
    prompt = started()
    decided(prompt, "u-a-1", "apply", "timeout")
    prompt.signal(OWNER, "Error", ["download failed: cut"], 0.0)
    offer(prompt, "u-a-2")  # waits behind the failure
    prompt.signal(OWNER, "FwupMessage", ["error", 0, "bad\nsignature"], 0.0)
    prompt.signal(OWNER, "UpdateFinished", ["u-a-1", False, "fwup error bad signature"], 0.0)
    view = prompt.view(0.0)
    assert view.title == "Software update — failed"
    assert view.progress is None
    assert [line.text for line in view.lines] == [
        "Installed automatically: nobody answered in time.",
        "download failed: cut",
        "bad signature",
        "fwup error bad signature",
    ]
    assert [b.label for b in view.buttons] == ["_Close"]
    assert prompt.press(Action.INSTALL) == []
    assert prompt.view(0.0).title == "Software update — update available"


def test_an_error_outside_an_update_only_goes_to_stderr() -> None:
    prompt = started()
    assert prompt.signal(OWNER, "Error", ["hub unreachable"], 0.0) == [
        Report("warning", "service error: hub unreachable")
    ]
    assert not prompt.view(0.0).visible


def test_an_archive_ready_notice_closes_on_any_key() -> None:
    prompt = started()
    prompt.signal(OWNER, "ArchiveReady", ["a-a-1", {"version": "7", "size": 10}, "/var/a.fw"], 0.0)
    view = prompt.view(0.0)
    assert view.title == "Software update — archive ready"
    assert view.rows == (("Version", "7"), ("Size", "10 bytes"), ("Saved as", "/var/a.fw"))
    assert [b.label for b in view.buttons] == ["_OK"]
    assert prompt.press(Action.LATER) == []
    assert not prompt.view(0.0).visible


# -- not allowed ----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", sorted(p.ACCESS_DENIED_ERRORS))
def test_not_allowed_is_said_and_the_buttons_are_off(error: str) -> None:
    prompt = Prompt(LATER_MS, "user nobody (uid 65534)")
    prompt.name_owner(OWNER)
    effects = prompt.call_failed(OWNER, "GetPendingRequests", error, "Rejected send message")
    assert effects == [Report("error", prompt.not_allowed_text())]
    assert prompt.not_allowed_text().startswith(
        "Not allowed to decide: user nobody (uid 65534) may not answer update requests"
    )
    assert prompt.call_failed(OWNER, "Decide", error, "again", "u-a-1") == []  # said once
    offer(prompt, "u-a-1")
    view = prompt.view(0.0)
    assert view.visible and view.title == "Software update — not allowed to decide"
    assert view.not_allowed == prompt.not_allowed_text()
    assert not any(b.enabled for b in view.buttons)
    for action in Action:
        assert prompt.press(action) == []
    # A new owner is asked again.
    prompt.name_owner(":1.6")
    prompt.pending_loaded(":1.6", [("u-b-1", "update", {})])
    assert prompt.view(0.0).not_allowed == ""


def test_a_refused_decide_says_not_allowed() -> None:
    prompt = started()
    offer(prompt, "u-a-1")
    prompt.press(Action.INSTALL)
    prompt.call_failed(OWNER, "Decide", names.ERROR_PREFIX + "AccessDenied", "no", "u-a-1")
    assert prompt.view(0.0).title == "Software update — not allowed to decide"


def test_other_pending_errors_are_reported_only() -> None:
    prompt = Prompt(LATER_MS, "x")
    prompt.name_owner(OWNER)
    effects = prompt.call_failed(
        OWNER, "GetPendingRequests", "org.freedesktop.DBus.Error.NoReply", "late"
    )
    assert effects == [
        Report("warning", "GetPendingRequests failed: org.freedesktop.DBus.Error.NoReply: late")
    ]
    assert prompt.allowed is None


# -- any interleaving: a Decide only ever names the current owner and one of its own requests ----

EVENTS = st.one_of(
    st.tuples(st.just("owner"), st.sampled_from(["", ":1.5", ":1.6"])),
    st.tuples(st.just("offer"), st.sampled_from([":1.5", ":1.6"]), st.integers(1, 3)),
    st.tuples(st.just("pending"), st.sampled_from([":1.5", ":1.6"]), st.integers(1, 3)),
    st.tuples(
        st.just("decided"),
        st.sampled_from([":1.5", ":1.6"]),
        st.integers(1, 3),
        st.sampled_from(["apply", "ignore", "reschedule"]),
    ),
    st.tuples(st.just("press"), st.sampled_from(list(Action))),
    st.tuples(
        st.just("reply"), st.sampled_from([":1.5", ":1.6"]), st.integers(1, 3), st.booleans()
    ),
    st.tuples(st.just("finished"), st.sampled_from([":1.5", ":1.6"]), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=40))
def test_a_decide_names_the_current_owner_and_its_own_request(
    events: list[tuple[Any, ...]],
) -> None:
    prompt = Prompt(LATER_MS, "x")
    prompt.connected(ME)
    offered: set[tuple[str, str]] = set()  # (owner, request id) the owner offered
    for event in events:
        kind, *args = event
        if kind == "owner":
            effects = prompt.name_owner(args[0])
        elif kind == "offer":
            rid = f"u-{args[0]}-{args[1]}"
            if args[0] == prompt.owner:
                offered.add((args[0], rid))
            effects = prompt.signal(args[0], "UpdateAvailable", [rid, {}], 0.0)
        elif kind == "pending":
            rid = f"u-{args[0]}-{args[1]}"
            if args[0] == prompt.owner:
                offered.add((args[0], rid))
            effects = prompt.pending_loaded(args[0], [(rid, "update", {})])
        elif kind == "decided":
            effects = prompt.signal(
                args[0], "DecisionMade", [f"u-{args[0]}-{args[1]}", args[2], 0, "timeout"], 0.0
            )
        elif kind == "press":
            effects = prompt.press(args[0])
        elif kind == "reply":
            rid = f"u-{args[0]}-{args[1]}"
            effects = (
                prompt.decide_done(args[0], rid)
                if args[2]
                else prompt.call_failed(args[0], "Decide", p.ERROR_UNKNOWN_REQUEST, "", rid)
            )
        else:
            effects = prompt.signal(args[0], "UpdateFinished", ["u-x", args[1], ""], 0.0)
        for call in decides(effects):
            assert call.owner == prompt.owner != ""
            assert (call.owner, call.request_id) in offered
            assert call.request_id.startswith(f"u-{call.owner}-")
        view = prompt.view(0.0)
        assert view.title.startswith("Software update")
        assert all(r.startswith(f"u-{prompt.owner}-") for r in prompt.pending_ids())
