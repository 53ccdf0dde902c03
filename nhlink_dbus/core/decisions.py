"""The decision engine: every question the service asks, and its answer (DESIGN §3).

An update offer, an archive offer (and later a media or a reboot question) is a
:class:`Question` here. The engine is sans-I/O: inputs carry ``now`` (seconds on
a monotonic clock, as everywhere in ``core/``); it returns effects and says when
it next needs to be woken (:meth:`DecisionEngine.next_deadline`, then
:meth:`DecisionEngine.tick`). Rules:

* Request ids are ``<kind letter>-<boot token>-<n>``. The boot token is chosen by
  the caller at start-up (random), so an id from before a restart never names a
  question after it: a UI still showing an old offer gets ``UnknownRequest``.
* A question is WAITING (announced; the first valid answer or the timeout
  decides it) or RESCHEDULED (asked again at its due time, same id, same subject).
* :meth:`DecisionEngine.ask` with the ``key`` of a question of the same kind that
  already exists keeps that question and its id and takes the fresher subject
  (the hub repeats offers): nothing is announced while it waits; a rescheduled
  one is asked again at once (a newer hub offer cancels a pending reschedule).
  For an *exclusive* kind (updates: one at a time), a question with another key
  is withdrawn first (:class:`Withdrawn`, its id is gone).
* Policy, before anyone is asked: a question whose ``uuid`` is the running
  firmware's is ignored (``ignore_same_uuid``); with nobody attached who can
  decide, the kind's ``nobody`` answer is taken at once (updates: ``apply``, as
  nerves_hub_link's default client). Both are announced with
  ``decided_by="policy"``.
* No answer within ``timeout_s`` → the kind's default, ``decided_by="timeout"``.
* An answer: unknown or already decided id → :class:`UnknownRequest`; a choice
  not of the kind → :class:`InvalidDecision`; ``delay_ms`` > 0 exactly with
  ``reschedule`` → else :class:`InvalidArgument`. A refused answer changes
  nothing. Every asking round ends in exactly one :class:`Decided` (or the
  question is withdrawn); a final choice (anything but ``reschedule``) ends the
  question, and no effect names its id again.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from enum import Enum

from nhlink_dbus.core.records import dataclass, field, replace
from nhlink_dbus.errors import InvalidArgument, InvalidDecision, UnknownRequest

RESCHEDULE = "reschedule"


class QuestionState(Enum):
    WAITING = "waiting"
    RESCHEDULED = "rescheduled"


@dataclass(frozen=True, slots=True)
class KindRules:
    """How questions of one kind are decided."""

    letter: str  # first part of its request ids
    choices: tuple[str, ...]  # valid answers, "reschedule" among them
    default: str  # on timeout
    nobody: str  # when nobody attached can decide
    exclusive: bool = False  # one question of this kind at a time


@dataclass(frozen=True, slots=True)
class Question:
    """One pending question. ``subject`` is the owner's (an update or archive offer)."""

    request_id: str
    kind: str
    key: str
    subject: object
    state: QuestionState = QuestionState.WAITING
    due: float = 0.0  # timeout (WAITING) or re-ask time (RESCHEDULED)


# -- effects ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Asked:
    """Announce ``question`` to every face that can decide."""

    question: Question


@dataclass(frozen=True, slots=True)
class Decided:
    """``question`` was answered (DecisionMade); ``final`` unless rescheduled."""

    question: Question
    decision: str
    delay_ms: int
    decided_by: str

    @property
    def final(self) -> bool:
        return self.decision != RESCHEDULE


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """``question`` is gone undecided (superseded, or withdrawn by its owner)."""

    question: Question


DecisionEffect = Asked | Decided | Withdrawn


@dataclass(slots=True)
class DecisionEngine:
    """See the module docstring."""

    kinds: Mapping[str, KindRules]
    timeout_s: float
    boot_token: str
    ignore_same_uuid: bool = True
    running_uuid: str | None = None
    deciders: int = 0  # attached faces that answer questions
    _questions: dict[str, Question] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- views ----------------------------------------------------------------------------

    def get(self, request_id: str) -> Question | None:
        return self._questions.get(request_id)

    def questions(self, kind: str | None = None) -> list[Question]:
        """Every question (of ``kind``), oldest first."""
        return [q for q in self._questions.values() if kind is None or q.kind == kind]

    def waiting(self) -> list[Question]:
        """The questions a face can answer now (GetPendingRequests)."""
        return [q for q in self._questions.values() if q.state is QuestionState.WAITING]

    def next_deadline(self) -> float | None:
        return min((q.due for q in self._questions.values()), default=None)

    # -- inputs -----------------------------------------------------------------------------

    def ask(
        self, kind: str, key: str, subject: object, now: float, *, uuid: str | None = None
    ) -> list[DecisionEffect]:
        """Ask (or keep asking) about ``subject``; see the module docstring."""
        rules = self.kinds[kind]
        out: list[DecisionEffect] = []
        same = next((q for q in self.questions(kind) if q.key == key), None)
        if same is not None and same.state is QuestionState.WAITING:
            self._questions[same.request_id] = replace(same, subject=subject)
            return out
        if rules.exclusive:
            out += self._withdraw_others(kind, same)
        if same is not None:
            question = replace(same, subject=subject)
        else:
            question = self._new_question(kind, key, subject)
        if self.ignore_same_uuid and uuid is not None and uuid == self.running_uuid:
            self._questions.pop(question.request_id, None)
            out.append(Decided(question, "ignore", 0, "policy"))
            return out
        out.extend(self._put_to_faces(question, now))
        return out

    def ask_answered(
        self, kind: str, key: str, subject: object, decision: str, decided_by: str
    ) -> tuple[str, list[DecisionEffect]]:
        """A question its asker answers at once (InstallFile: the caller asks to apply)."""
        if decision not in self.kinds[kind].choices or decision == RESCHEDULE:
            raise InvalidDecision(f"{decision!r} cannot answer a new {kind} question")
        out = self._withdraw_others(kind, None) if self.kinds[kind].exclusive else []
        question = self._new_question(kind, key, subject)
        out.append(Decided(question, decision, 0, decided_by))
        return question.request_id, out

    def answer(
        self, request_id: str, decision: str, delay_ms: int, decided_by: str, now: float
    ) -> list[DecisionEffect]:
        """A face's answer; raises a RequestError (and changes nothing) if not valid."""
        question = self._questions.get(request_id)
        if question is None or question.state is not QuestionState.WAITING:
            raise UnknownRequest(f"no pending request {request_id!r}")
        rules = self.kinds[question.kind]
        if decision not in rules.choices:
            raise InvalidDecision(
                f"{decision!r} is not a decision for an {question.kind} "
                f"({', '.join(rules.choices)})"
            )
        if decision == RESCHEDULE and delay_ms <= 0:
            raise InvalidArgument("reschedule needs a delay_ms > 0")
        if decision != RESCHEDULE and delay_ms != 0:
            raise InvalidArgument("delay_ms must be 0 unless the decision is reschedule")
        return [self._decide(question, decision, delay_ms, decided_by, now)]

    def reopen(
        self, question: Question, delay_ms: int, decided_by: str, now: float
    ) -> list[DecisionEffect]:
        """A question decided ``apply`` whose apply was refused for now (the hub's
        ``update_rejected``): rescheduled by ``decided_by``, same id, asked again
        after ``delay_ms``. Nothing happens if its id is in use again."""
        if question.request_id in self._questions:
            return []
        return [self._decide(question, RESCHEDULE, max(1, delay_ms), decided_by, now)]

    def withdraw(self, request_id: str) -> list[DecisionEffect]:
        """The owner drops a question (e.g. its subject went away)."""
        question = self._questions.pop(request_id, None)
        return [] if question is None else [Withdrawn(question)]

    def tick(self, now: float) -> list[DecisionEffect]:
        """Time passed: timeouts take the default, due reschedules are asked again."""
        out: list[DecisionEffect] = []
        due = [q for q in self._questions.values() if q.due <= now]
        for question in heapq.nsmallest(len(due), due, key=lambda q: q.due):
            if question.state is QuestionState.WAITING:
                rules = self.kinds[question.kind]
                out.append(self._decide(question, rules.default, 0, "timeout", now))
            else:
                out.extend(self._put_to_faces(question, now))
        return out

    # -- internals --------------------------------------------------------------------------

    def _new_question(self, kind: str, key: str, subject: object) -> Question:
        letter = self.kinds[kind].letter
        return Question(f"{letter}-{self.boot_token}-{next(self._counter)}", kind, key, subject)

    def _withdraw_others(self, kind: str, keep: Question | None) -> list[DecisionEffect]:
        out: list[DecisionEffect] = []
        for other in self.questions(kind):
            if other is not keep:
                del self._questions[other.request_id]
                out.append(Withdrawn(other))
        return out

    def _put_to_faces(self, question: Question, now: float) -> list[DecisionEffect]:
        if self.deciders <= 0:
            self._questions.pop(question.request_id, None)
            return [Decided(question, self.kinds[question.kind].nobody, 0, "policy")]
        waiting = replace(question, state=QuestionState.WAITING, due=now + self.timeout_s)
        self._questions[waiting.request_id] = waiting
        return [Asked(waiting)]

    def _decide(
        self, question: Question, decision: str, delay_ms: int, decided_by: str, now: float
    ) -> Decided:
        if decision == RESCHEDULE:
            self._questions[question.request_id] = replace(
                question, state=QuestionState.RESCHEDULED, due=now + delay_ms / 1000
            )
        else:
            del self._questions[question.request_id]
        return Decided(question, decision, delay_ms, decided_by)
