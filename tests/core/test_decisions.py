"""The decision engine (core/decisions.py), synchronously under a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nhlink_dbus.core.decisions import (
    Asked,
    Decided,
    DecisionEffect,
    DecisionEngine,
    KindRules,
    QuestionState,
    Withdrawn,
)
from nhlink_dbus.errors import InvalidArgument, InvalidDecision, UnknownRequest

KINDS = {
    "update": KindRules("u", ("apply", "ignore", "reschedule"), "apply", "apply", exclusive=True),
    "archive": KindRules("a", ("download", "ignore", "reschedule"), "ignore", "ignore"),
}


def engine(deciders: int = 1, token: str = "t0", timeout_s: float = 30.0) -> DecisionEngine:
    return DecisionEngine(
        KINDS, timeout_s, token, ignore_same_uuid=True, running_uuid="run", deciders=deciders
    )


def asked_id(effects: list[DecisionEffect]) -> str:
    (asked,) = [e for e in effects if isinstance(e, Asked)]
    return asked.question.request_id


def test_ask_then_first_valid_answer_wins() -> None:
    e = engine()
    rid = asked_id(e.ask("update", "hub:x", "offer", now=0.0, uuid="x"))
    assert rid == "u-t0-1"
    assert [q.request_id for q in e.waiting()] == [rid]
    (d,) = e.answer(rid, "apply", 0, "uid=0 :1.5", now=1.0)
    assert isinstance(d, Decided) and (d.decision, d.decided_by, d.final) == (
        "apply",
        "uid=0 :1.5",
        True,
    )
    with pytest.raises(UnknownRequest):
        e.answer(rid, "ignore", 0, "uid=0 :1.6", now=2.0)
    assert e.waiting() == [] and e.next_deadline() is None


def test_refused_answers_change_nothing() -> None:
    e = engine()
    rid = asked_id(e.ask("update", "hub:x", "offer", now=0.0))
    before = e.questions()
    with pytest.raises(InvalidDecision):
        e.answer(rid, "download", 0, "me", now=1.0)
    with pytest.raises(InvalidArgument):
        e.answer(rid, "reschedule", 0, "me", now=1.0)
    with pytest.raises(InvalidArgument):
        e.answer(rid, "apply", 5, "me", now=1.0)
    with pytest.raises(UnknownRequest):
        e.answer("u-other-1", "apply", 0, "me", now=1.0)
    assert e.questions() == before


def test_timeout_takes_the_default_at_the_deadline() -> None:
    e = engine(timeout_s=30.0)
    rid = asked_id(e.ask("archive", "arch", "offer", now=10.0))
    assert e.next_deadline() == 40.0
    assert e.tick(39.999) == []
    (d,) = e.tick(40.0)
    assert isinstance(d, Decided)
    assert (d.question.request_id, d.decision, d.decided_by) == (rid, "ignore", "timeout")


def test_reschedule_asks_again_with_the_same_id_after_the_delay() -> None:
    e = engine()
    rid = asked_id(e.ask("update", "hub:x", "offer", now=0.0))
    (d,) = e.answer(rid, "reschedule", 60_000, "me", now=5.0)
    assert isinstance(d, Decided) and not d.final
    assert e.waiting() == [] and e.get(rid).state is QuestionState.RESCHEDULED  # type: ignore[union-attr]
    assert e.next_deadline() == 65.0
    assert e.tick(64.0) == []
    assert asked_id(e.tick(65.0)) == rid
    assert e.next_deadline() == 95.0  # a fresh timeout for the new round


def test_repeated_offer_keeps_the_question_and_takes_the_fresher_subject() -> None:
    e = engine()
    rid = asked_id(e.ask("update", "hub:x", "old", now=0.0))
    assert e.ask("update", "hub:x", "new", now=1.0) == []
    assert e.get(rid).subject == "new"  # type: ignore[union-attr]
    e.answer(rid, "reschedule", 1000, "me", now=2.0)
    # a new hub offer cancels the pending reschedule: asked again now, same id
    assert asked_id(e.ask("update", "hub:x", "newer", now=2.5)) == rid


def test_other_offer_supersedes_for_exclusive_kinds_only() -> None:
    e = engine()
    first = asked_id(e.ask("update", "hub:x", "x", now=0.0))
    out = e.ask("update", "hub:y", "y", now=1.0)
    assert [type(x) for x in out] == [Withdrawn, Asked]
    assert out[0].question.request_id == first
    a1 = asked_id(e.ask("archive", "a1", "a1", now=0.0))
    a2 = asked_id(e.ask("archive", "a2", "a2", now=0.0))
    assert {q.request_id for q in e.questions("archive")} == {a1, a2}


def test_policies_same_uuid_and_nobody_to_decide() -> None:
    e = engine()
    (d,) = e.ask("update", "hub:run", "offer", now=0.0, uuid="run")
    assert isinstance(d, Decided) and (d.decision, d.decided_by) == ("ignore", "policy")
    e = engine(deciders=0)
    (d,) = e.ask("update", "hub:x", "offer", now=0.0, uuid="x")
    assert isinstance(d, Decided) and (d.decision, d.decided_by) == ("apply", "policy")
    (d,) = e.ask("archive", "a", "offer", now=0.0)
    assert isinstance(d, Decided) and d.decision == "ignore"
    assert e.questions() == []


def test_ids_differ_across_restarts() -> None:
    one = asked_id(engine(token="aaaa").ask("update", "k", "s", now=0.0))
    two = asked_id(engine(token="bbbb").ask("update", "k", "s", now=0.0))
    assert one != two
    with pytest.raises(UnknownRequest):
        engine(token="bbbb").answer(one, "apply", 0, "me", now=0.0)


def test_ask_answered_and_withdraw() -> None:
    e = engine()
    pending = asked_id(e.ask("update", "hub:x", "x", now=0.0))
    rid, out = e.ask_answered("update", "file:y", "y", "apply", "uid=0 :1.2")
    assert [type(x) for x in out] == [Withdrawn, Decided]
    assert rid != pending and e.questions() == []
    with pytest.raises(InvalidDecision):
        e.ask_answered("update", "file:z", "z", "reschedule", "me")
    a = asked_id(e.ask("archive", "a", "a", now=0.0))
    assert [type(x) for x in e.withdraw(a)] == [Withdrawn]
    assert e.withdraw(a) == []


# -- any interleaving ------------------------------------------------------------------------

_ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("ask"), st.sampled_from(["update", "archive"]), st.sampled_from("xyzr")),
        st.tuples(
            st.just("answer"),
            st.integers(0, 6),
            st.sampled_from(["apply", "ignore", "reschedule", "download", "bogus"]),
            st.sampled_from([0, 1, 1500]),
        ),
        st.tuples(st.just("tick"), st.floats(0, 100, allow_nan=False)),
        st.tuples(st.just("withdraw"), st.integers(0, 6)),
        st.tuples(st.just("deciders"), st.integers(0, 2)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_ACTIONS)
def test_any_interleaving_keeps_one_outcome_per_round(actions: list[tuple[object, ...]]) -> None:
    e = engine(timeout_s=5.0)
    now = 0.0
    ids: list[str] = []
    open_round: dict[str, bool] = {}  # id -> asked and not yet decided in this round
    ended: set[str] = set()

    def check(effects: list[DecisionEffect]) -> None:
        for effect in effects:
            rid = effect.question.request_id
            assert rid not in ended, f"{type(effect).__name__} for ended {rid}"
            if rid not in ids:
                ids.append(rid)
            if isinstance(effect, Asked):
                assert not open_round.get(rid), f"asked twice in one round: {rid}"
                open_round[rid] = True
            elif isinstance(effect, Decided):
                # one DecisionMade per round: a question is decided only once per asking
                open_round[rid] = False
                if effect.final:
                    ended.add(rid)
            else:
                ended.add(rid)
        # every question the engine holds is exactly the ones not ended
        assert {q.request_id for q in e.questions()} <= set(ids) - ended
        for q in e.waiting():
            assert open_round.get(q.request_id), q

    for action in actions:
        kind = action[0]
        if kind == "ask":
            check(e.ask(str(action[1]), str(action[2]), action, now, uuid=str(action[2])))
        elif kind == "answer":
            index, decision, delay = action[1], str(action[2]), int(action[3])  # type: ignore[call-overload]
            rid = ids[index] if isinstance(index, int) and index < len(ids) else "u-none-1"
            before = e.questions()
            try:
                check(e.answer(rid, decision, delay, "someone", now))
            except (UnknownRequest, InvalidDecision, InvalidArgument):
                assert e.questions() == before
        elif kind == "tick":
            now = max(now, float(action[1]))  # type: ignore[arg-type]
            check(e.tick(now))
        elif kind == "withdraw":
            index = action[1]
            if isinstance(index, int) and index < len(ids):
                check(e.withdraw(ids[index]))
        else:
            e.deciders = int(action[1])  # type: ignore[call-overload]
        deadline = e.next_deadline()
        assert deadline is None or deadline >= min(q.due for q in e.questions())
    # time runs out: every waiting question ends in exactly one decision
    check(e.tick(now + 10_000))
    check(e.tick(now + 20_000))
    assert e.waiting() == [] or all(open_round[q.request_id] for q in e.waiting())
