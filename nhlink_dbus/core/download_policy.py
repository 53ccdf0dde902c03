"""Download arithmetic and the resumable-download state machine (protocol.md §6.4, §14).

Sans-I/O: no sockets, no clock, no sleeping. The adapter (``aio/downloader.py``)
asks :class:`DownloadState` for the next request, feeds it what the server
answered, and performs what it is told (stream, restart the sink, wait, stop).
``now`` is a monotonic time in seconds, passed in by the caller.

Rules (nerves_hub_link 2.5.2 ``NervesHubLink.Downloader`` plus the §14 fixes)::

    READY      --request-->   REQUESTING                     (headers of next_request())
    REQUESTING --response-->  RECEIVING  2xx accepted        (Accept; maybe restart the sink)
                              READY      3xx + Location      (Redirect: follow at once)
                              FAILED     >= 400, bad 206, too many redirects
    RECEIVING  --data-->      RECEIVING
    RECEIVING  --body_end-->  DONE       all bytes there     (Complete)
                              READY      a 206 ended at its own range end before the
                                         total: ask for the rest at once (Continue)
                              WAITING    the body ended short (as a failure, below)
    REQUESTING/RECEIVING --failed--> WAITING (Retry at now + time_between_retries)
                                     FAILED  (GiveUp max_disconnects_reached)
    RECEIVING  --refetch-->   READY      the sink refused bytes from ``offset`` on (a part
                                         that failed its checksum): ask again from there
    WAITING    --request-->   REQUESTING (once now >= retry_at)
    any live state --check--> FAILED  max_timeout_reached / worst_case_download_speed_reached

* Requests carry ``X-Retry-Number: <attempt>`` ("0" first), a ``User-Agent``, and,
  once bytes have been received, ``Range: bytes=<received>-`` (open-ended, §14;
  2.5.2 sent ``bytes=<received>-<total>``).
* A resumed request must be answered ``206`` with ``Content-Range: bytes
  <received>-<end>/<total>`` (``end < total``, ``total`` equal to the known
  length); anything else in a 206 is fatal (``content_range_mismatch``): the
  resource changed under us and appending would corrupt the output. A ``200``
  answer to a Range request restarts from byte 0 (``Accept.restart``): the
  caller restarts its sink (2.5.2 appended the whole body **[quirk]**).
* ``3xx`` with ``Location`` is followed at once and later retries go to the new
  URL, as 2.5.2. As 2.5.2 the attempt number (X-Retry-Number) starts again at 0;
  bytes received and the length are reset too when nothing was received yet.
  Deviation: once bytes were received they are kept and the new location is
  asked with Range (2.5.2 reset them and appended a second copy **[quirk]**),
  and the disconnect budget is *not* reset: §6.4 defines ``max_disconnects`` over
  the whole download. At most ``max_redirects`` hops per download (total).
* ``>= 400`` → fatal ``http_error <status>`` (2.5.2 stops too; ``416`` included).
* A missing ``Content-Length`` (§14: 2.5.2 could never complete) is accepted: the
  download completes when that body ends cleanly (chunked framing detects a
  truncation; a close-delimited body cannot, and the applier's own checks —
  fwup verifies every resource — catch that). A break before the end resumes
  with Range; the 206's ``Content-Range`` then tells the total.
* Failures (idle timeout, transport and connect errors, a short body) count
  against ``max_disconnects`` over the whole download; receiving data does not
  reset the count. With ``max_disconnects = N`` exactly N attempts are made,
  and the N-th failure gives up at once (2.5.2 waited ``time_between_retries``
  first).
* ``max_timeout``: the whole download's lifetime from construction.
* Worst-case timer: ``max(60000, round(length * 8 / speed * 1000))`` ms, armed by
  the first accepted response whose length is known (2.5.2 armed 60 s for an
  unknown length, which killed slow downloads without ``Content-Length``),
  paused from a failure until the next accepted response; a restart keeps it.

Illegal calls raise :class:`StateError` and leave the state unchanged.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import urljoin, urlsplit

from nhlink_dbus.core.backoff import round_half_away
from nhlink_dbus.core.bounds import bounded, check_bounds
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import StateError

MIN_WORST_CASE_MS: Final = 60_000

# Reasons (the text of DownloadError / the on_error callback).
MAX_DISCONNECTS_REACHED: Final = "max_disconnects_reached"
MAX_TIMEOUT_REACHED: Final = "max_timeout_reached"
WORST_CASE_REACHED: Final = "worst_case_download_speed_reached"
CONTENT_RANGE_MISMATCH: Final = "content_range_mismatch"
TOO_MANY_REDIRECTS: Final = "too_many_redirects"
BAD_REDIRECT: Final = "bad_redirect"
INCOMPLETE_BODY: Final = "incomplete_body"
BODY_TOO_LONG: Final = "body_too_long"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``RetryConfig`` of §6.4 (defaults of 2.5.2), plus the redirect hop limit.

    Each field's default and range live here and only here: the ``[download]``
    reader of ``nhlink_dbus/config.py`` takes both from these fields.
    """

    max_disconnects: int = bounded(10, 1, 1_000_000)
    idle_timeout_ms: int = bounded(60_000, 1)
    time_between_retries_ms: int = bounded(15_000, 0)
    max_timeout_ms: int = bounded(86_400_000, 1)
    worst_case_download_speed_bps: int = bounded(30_000, 1, 2**53)
    max_redirects: int = bounded(10, 0, 100)

    def __post_init__(self) -> None:
        check_bounds(self, "download")


def worst_case_timeout_ms(content_length: int, speed_bps: int) -> int:
    """``TimeoutCalculation.calculate_worst_case_timeout/2``: ms to fetch at ``speed_bps``.

    Same float operations as the Elixir (``length * 8 / speed * 1000``, ``round/1``
    halves away from zero), floor 60 000 ms.
    """
    return max(MIN_WORST_CASE_MS, round_half_away(content_length * 8 / speed_bps * 1000))


# -- parsed header values ----------------------------------------------------------

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ContentRange:
    """``Content-Range: bytes first-last/total`` (total None for ``*``)."""

    first: int
    last: int
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    """A satisfied ``Content-Range`` value, or None when absent or malformed."""
    if value is None:
        return None
    match = _CONTENT_RANGE.match(value)
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if last < first or (total is not None and last >= total):
        return None
    return ContentRange(first, last, total)


def parse_content_length(value: str | None) -> int | None:
    """A ``Content-Length`` value, or None when absent or not a decimal integer."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() and value.isascii() else None


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


# -- what the machine tells its driver ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """The next GET to make: ``url`` (query string kept) and headers in order."""

    url: str
    headers: tuple[tuple[str, str], ...]
    attempt: int
    offset: int


@dataclass(frozen=True, slots=True)
class Accept:
    """Stream this 2xx body into the sink; first ``sink.restart()`` when ``restart``."""

    restart: bool
    offset: int
    content_length: int | None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Follow: call :meth:`DownloadState.next_request` at once (it targets ``url``)."""

    url: str


@dataclass(frozen=True, slots=True)
class Retry:
    """A non-fatal failure: wait until ``at`` (same clock as ``now``), then request again."""

    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Continue:
    """A 206 delivered its whole range, short of the total: request the rest now."""


@dataclass(frozen=True, slots=True)
class Complete:
    """Every byte is there."""

    received: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The download failed for good; ``reason`` is the DownloadError text."""

    reason: str


@dataclass(frozen=True, slots=True)
class DownloadStats:
    """Counters of one download, for logs and the caller."""

    received: int
    content_length: int | None
    requests: int
    disconnects: int
    restarts: int
    redirects: int
    elapsed_s: float


class Phase(enum.Enum):
    READY = "ready"
    REQUESTING = "requesting"
    RECEIVING = "receiving"
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"


_TRANSITIONS: Final[dict[tuple[Phase, str], frozenset[Phase]]] = {
    (Phase.READY, "request"): frozenset({Phase.REQUESTING}),
    (Phase.WAITING, "request"): frozenset({Phase.REQUESTING}),
    (Phase.REQUESTING, "response"): frozenset({Phase.RECEIVING, Phase.READY, Phase.FAILED}),
    (Phase.RECEIVING, "data"): frozenset({Phase.RECEIVING}),
    (Phase.RECEIVING, "body_end"): frozenset(
        {Phase.DONE, Phase.READY, Phase.WAITING, Phase.FAILED}
    ),
    (Phase.REQUESTING, "failed"): frozenset({Phase.WAITING, Phase.FAILED}),
    (Phase.RECEIVING, "refetch"): frozenset({Phase.READY}),
    (Phase.RECEIVING, "failed"): frozenset({Phase.WAITING, Phase.FAILED}),
}

_LIVE: Final = frozenset({Phase.READY, Phase.REQUESTING, Phase.RECEIVING, Phase.WAITING})


class DownloadState:
    """One resumable download of ``url`` under ``policy``, started at ``now``."""

    def __init__(
        self, url: str, policy: RetryPolicy, now: float, *, user_agent: str | None = None
    ) -> None:
        self.policy = policy
        self.url = url
        self.user_agent = user_agent
        self.phase = Phase.READY
        self.received = 0
        self.content_length: int | None = None
        self.attempt = 0  # X-Retry-Number; back to 0 on a redirect, as 2.5.2
        self.disconnects = 0  # failures over the whole download
        self.requests = 0
        self.restarts = 0
        self.redirects = 0
        self.refetches = 0
        self.retry_at = -math.inf
        self.reason: str | None = None
        self._started = now
        self._range_sent = False
        self._range_end: int | None = None  # last byte the current 206 promised
        self._worst_remaining_s: float | None = None  # None: not armed
        self._worst_since: float | None = None  # running since (None: paused)

    # -- queries -----------------------------------------------------------------------

    @property
    def max_timeout_at(self) -> float:
        return self._started + self.policy.max_timeout_ms / 1000

    @property
    def worst_case_at(self) -> float | None:
        """When the worst-case timer expires, if it is running."""
        if self._worst_remaining_s is None or self._worst_since is None:
            return None
        return self._worst_since + self._worst_remaining_s

    def deadline(self) -> float:
        """The earliest moment :meth:`check` may give up (max or worst-case timer)."""
        worst = self.worst_case_at
        return self.max_timeout_at if worst is None else min(worst, self.max_timeout_at)

    def stats(self, now: float) -> DownloadStats:
        return DownloadStats(
            received=self.received,
            content_length=self.content_length,
            requests=self.requests,
            disconnects=self.disconnects,
            restarts=self.restarts,
            redirects=self.redirects,
            elapsed_s=now - self._started,
        )

    # -- transitions -------------------------------------------------------------------

    def _move(self, trigger: str, target: Phase) -> None:
        allowed = _TRANSITIONS.get((self.phase, trigger))
        if allowed is None or target not in allowed:
            raise StateError(f"download: {trigger} not allowed in state {self.phase.value}")
        self.phase = target

    def _require(self, trigger: str) -> None:
        if (self.phase, trigger) not in _TRANSITIONS:
            raise StateError(f"download: {trigger} not allowed in state {self.phase.value}")

    def check(self, now: float) -> GiveUp | None:
        """Give up when the max timeout or the worst-case timer has expired."""
        if self.phase not in _LIVE:
            return None
        if now >= self.max_timeout_at:
            return self._give_up(MAX_TIMEOUT_REACHED)
        worst = self.worst_case_at
        if worst is not None and now >= worst:
            return self._give_up(WORST_CASE_REACHED)
        return None

    def _give_up(self, reason: str) -> GiveUp:
        self.phase = Phase.FAILED
        self.reason = reason
        return GiveUp(reason)

    def next_request(self, now: float) -> Request:
        """Start the next attempt (the first, a retry once ``retry_at`` has come, or a hop)."""
        self._require("request")
        if self.phase is Phase.WAITING and now < self.retry_at:
            raise StateError("download: retry requested before retry_at")
        headers: list[tuple[str, str]] = []
        if self.user_agent is not None:
            headers.append(("User-Agent", self.user_agent))
        headers.append(("X-Retry-Number", str(self.attempt)))
        headers.append(("Content-Type", "application/octet-stream"))
        self._range_sent = self.received > 0
        if self._range_sent:
            headers.append(("Range", f"bytes={self.received}-"))
        self._range_end = None
        self._move("request", Phase.REQUESTING)
        self.requests += 1
        return Request(self.url, tuple(headers), self.attempt, self.received)

    def response(
        self, now: float, status: int, headers: Iterable[tuple[str, str]]
    ) -> Accept | Redirect | GiveUp:
        """Judge the status line and headers of the current request."""
        self._require("response")
        headers = list(headers)
        if 300 <= status < 400:
            return self._redirect(status, _header(headers, "location"))
        if status >= 400 or status < 200:
            return self._give_up(f"http_error {status}")
        length = parse_content_length(_header(headers, "content-length"))
        restart = False
        if status == 206:
            content_range = parse_content_range(_header(headers, "content-range"))
            if (
                content_range is None
                or content_range.first != self.received
                or (
                    content_range.total is not None
                    and self.content_length is not None
                    and content_range.total != self.content_length
                )
                or (length is not None and length != content_range.last - content_range.first + 1)
            ):
                return self._give_up(CONTENT_RANGE_MISMATCH)
            if content_range.total is not None:
                self.content_length = content_range.total
            self._range_end = content_range.last
        else:
            # A full body: the first answer, or a server that ignored our Range.
            restart = self._range_sent
            if restart:
                self.restarts += 1
            self.received = 0
            self.content_length = length
        self._move("response", Phase.RECEIVING)
        self._arm_worst_case(now)
        return Accept(restart, self.received, self.content_length)

    def _redirect(self, status: int, location: str | None) -> Redirect | GiveUp:
        if location is None:
            return self._give_up(f"http_error {status}")
        if self.redirects >= self.policy.max_redirects:
            return self._give_up(TOO_MANY_REDIRECTS)
        target = urljoin(self.url, location.strip())
        if urlsplit(target).scheme not in ("http", "https"):
            return self._give_up(BAD_REDIRECT)
        self._move("response", Phase.READY)
        self.redirects += 1
        self.url = target
        self.attempt = 0
        if self.received == 0:
            self.content_length = None
        return Redirect(target)

    def _arm_worst_case(self, now: float) -> None:
        if self._worst_remaining_s is None:
            if self.content_length is None:
                return
            ms = worst_case_timeout_ms(
                self.content_length, self.policy.worst_case_download_speed_bps
            )
            self._worst_remaining_s = ms / 1000
        self._worst_since = now

    def _pause_worst_case(self, now: float) -> None:
        if self._worst_remaining_s is not None and self._worst_since is not None:
            self._worst_remaining_s = max(0.0, self._worst_remaining_s - (now - self._worst_since))
            self._worst_since = None

    def data(self, now: float, size: int) -> None:
        """``size`` body bytes were handed to the sink."""
        del now
        self._require("data")
        if size < 0:
            raise StateError("download: negative chunk size")
        self.received += size

    def body_end(self, now: float) -> Complete | Continue | Retry | GiveUp:
        """The current body ended without a transport error."""
        self._require("body_end")
        if self.content_length is None:
            self.phase = Phase.DONE
            return Complete(self.received)
        if self.received > self.content_length:
            return self._give_up(BODY_TOO_LONG)
        if self.received == self.content_length:
            self.phase = Phase.DONE
            return Complete(self.received)
        if self._range_end is not None and self.received == self._range_end + 1:
            self.phase = Phase.READY
            return Continue()
        return self.failed(now, INCOMPLETE_BODY)

    def refetch(self, now: float, offset: int) -> None:
        """The sink dropped what it got from ``offset`` on (core/partials.py): the next
        request asks for the bytes from there (Range), at once. It is a new attempt
        (X-Retry-Number) but not a disconnect; the sink counts its own failures."""
        self._require("refetch")
        if not 0 <= offset <= self.received:
            raise StateError(f"download: cannot fetch again from {offset} (have {self.received})")
        self._pause_worst_case(now)
        self.received = offset
        self.attempt += 1
        self.refetches += 1
        self._move("refetch", Phase.READY)

    def failed(self, now: float, reason: str) -> Retry | GiveUp:
        """The attempt failed (idle timeout, transport error, short body): retry or stop."""
        self._require("failed")
        self._pause_worst_case(now)
        self.disconnects += 1
        self.attempt += 1
        if self.disconnects >= self.policy.max_disconnects:
            return self._give_up(MAX_DISCONNECTS_REACHED)
        self.phase = Phase.WAITING
        self.retry_at = now + self.policy.time_between_retries_ms / 1000
        return Retry(reason, self.retry_at)
