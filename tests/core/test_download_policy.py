"""core.download_policy: the §6.4 retry policy and resume rules on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nhlink_dbus.core.bounds import MAX_MS
from nhlink_dbus.core.download_policy import (
    Accept,
    Complete,
    ContentRange,
    Continue,
    DownloadState,
    GiveUp,
    Phase,
    Redirect,
    Request,
    Retry,
    RetryPolicy,
    parse_content_length,
    parse_content_range,
    worst_case_timeout_ms,
)
from nhlink_dbus.errors import ConfigError, StateError

URL = "https://files.example.com/firmware/x.fw?X-Amz-Signature=secret&X-Amz-Expires=86400"
UA = "nhlink-dbus/0.1.0"


def hdr(request: Request, name: str) -> str | None:
    return dict(request.headers).get(name)


def ok(length: int | None) -> list[tuple[str, str]]:
    return [] if length is None else [("Content-Length", str(length))]


def partial(first: int, total: int, last: int | None = None) -> list[tuple[str, str]]:
    last = total - 1 if last is None else last
    return [
        ("Content-Length", str(last - first + 1)),
        ("Content-Range", f"bytes {first}-{last}/{total}"),
    ]


def new(policy: RetryPolicy | None = None, now: float = 0.0) -> DownloadState:
    return DownloadState(URL, policy or RetryPolicy(), now, user_agent=UA)


# -- the arithmetic ----------------------------------------------------------------


def test_worst_case_timeout_elixir_vectors() -> None:
    # §12 timeout_calculation_test.exs
    assert worst_case_timeout_ms(20_971_520, 30_000) == 5_592_405
    assert worst_case_timeout_ms(1, 30_000) == 60_000
    assert worst_case_timeout_ms(0, 30_000) == 60_000


def test_worst_case_rounds_halves_away_from_zero() -> None:
    # 120 001 * 8 / 16 000 * 1000 == 60 000.5 exactly; Elixir's round/1 gives 60 001
    assert worst_case_timeout_ms(120_001, 16_000) == 60_001
    assert worst_case_timeout_ms(7_500_001, 1_000_000) == 60_000


def test_policy_defaults_are_2_5_2() -> None:
    p = RetryPolicy()
    assert (
        p.max_disconnects,
        p.idle_timeout_ms,
        p.time_between_retries_ms,
        p.max_timeout_ms,
        p.worst_case_download_speed_bps,
        p.max_redirects,
    ) == (10, 60_000, 15_000, 86_400_000, 30_000, 10)


@pytest.mark.parametrize(
    "field",
    [
        {"max_disconnects": 0},
        {"idle_timeout_ms": 0},
        {"time_between_retries_ms": -1},
        {"max_timeout_ms": 0},
        {"worst_case_download_speed_bps": 0},
        {"max_redirects": -1},
        {"max_disconnects": True},
        {"idle_timeout_ms": 1.5},
        {"max_disconnects": 1_000_001},
        {"max_timeout_ms": MAX_MS + 1},
        {"max_redirects": 101},
    ],
)
def test_policy_rejects_bad_values(field: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(field))):
        RetryPolicy(**field)  # type: ignore[arg-type]


def test_policy_error_names_the_key_as_the_config_file_does() -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy(max_redirects=101)
    assert str(info.value) == "download.max_redirects: must be between 0 and 100 (got 101)"


def test_parse_content_range() -> None:
    assert parse_content_range("bytes 10-19/20") == ContentRange(10, 19, 20)
    assert parse_content_range("BYTES 0-0/*") == ContentRange(0, 0, None)
    assert parse_content_range("bytes 5-4/20") is None
    assert parse_content_range("bytes 0-20/20") is None
    assert parse_content_range("bytes */20") is None
    assert parse_content_range(None) is None


@given(st.integers(0, 2**62), st.integers(0, 2**62), st.integers(1, 2**63))
def test_parse_content_range_round_trip(first: int, span: int, total: int) -> None:
    last = first + span
    parsed = parse_content_range(f"bytes {first}-{last}/{total}")
    assert parsed == (ContentRange(first, last, total) if last < total else None)


@given(st.text())
def test_header_parsers_return_a_value_or_none(text: str) -> None:
    parse_content_range(text)
    length = parse_content_length(text)
    assert length is None or length >= 0


# -- requests and responses -------------------------------------------------------


def test_first_request_headers() -> None:
    s = new()
    r = s.next_request(0.0)
    assert r.url == URL  # the query string is kept
    assert r.headers == (
        ("User-Agent", UA),
        ("X-Retry-Number", "0"),
        ("Content-Type", "application/octet-stream"),
    )
    assert s.phase is Phase.REQUESTING


def test_clean_download() -> None:
    s = new()
    s.next_request(0.0)
    assert s.response(0.1, 200, ok(100)) == Accept(restart=False, offset=0, content_length=100)
    s.data(0.2, 60)
    s.data(0.3, 40)
    assert s.body_end(0.3) == Complete(100)
    assert s.phase is Phase.DONE
    st_ = s.stats(1.0)
    assert (st_.received, st_.requests, st_.disconnects, st_.restarts) == (100, 1, 0, 0)


def test_cut_resumes_with_open_range_and_retry_number() -> None:
    s = new()
    s.next_request(0.0)
    s.response(0.0, 200, ok(12))
    s.data(0.0, 1)
    retry = s.failed(1.0, "read_error")
    assert retry == Retry("read_error", 16.0)
    with pytest.raises(StateError):
        s.next_request(15.9)
    assert s.phase is Phase.WAITING
    r = s.next_request(16.0)
    assert hdr(r, "Range") == "bytes=1-"
    assert hdr(r, "X-Retry-Number") == "1"
    assert s.response(16.0, 206, partial(1, 12)) == Accept(False, 1, 12)
    s.data(16.0, 11)
    assert s.body_end(16.0) == Complete(12)


def test_failure_before_any_byte_sends_no_range() -> None:
    s = new()
    s.next_request(0.0)
    s.failed(0.0, "connect_error")
    r = s.next_request(15.0)
    assert hdr(r, "Range") is None
    assert hdr(r, "X-Retry-Number") == "1"


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "6")],  # no Content-Range
        partial(5, 12),  # wrong start
        partial(6, 13, last=11),  # wrong total
        [("Content-Length", "3"), ("Content-Range", "bytes 6-11/12")],  # inconsistent
        [("Content-Range", "garbage")],
    ],
)
def test_bad_206_is_fatal(headers: list[tuple[str, str]]) -> None:
    s = new()
    s.next_request(0.0)
    s.response(0.0, 200, ok(12))
    s.data(0.0, 6)
    s.failed(0.0, "x")
    s.next_request(15.0)
    assert s.response(15.0, 206, headers) == GiveUp("content_range_mismatch")
    assert s.phase is Phase.FAILED
    assert s.check(1e9) is None  # terminal


def test_200_to_a_range_request_restarts() -> None:
    s = new()
    s.next_request(0.0)
    s.response(0.0, 200, ok(12))
    s.data(0.0, 7)
    s.failed(0.0, "x")
    s.next_request(15.0)
    assert s.response(15.0, 200, ok(12)) == Accept(restart=True, offset=0, content_length=12)
    assert s.received == 0
    s.data(15.0, 12)
    assert s.body_end(15.0) == Complete(12)
    assert s.stats(15.0).restarts == 1


def test_206_without_range_request_at_zero_is_accepted() -> None:
    s = new()
    s.next_request(0.0)
    assert s.response(0.0, 206, partial(0, 12)) == Accept(False, 0, 12)


@pytest.mark.parametrize("status", [400, 403, 404, 416, 500, 503, 199])
def test_http_errors_are_fatal(status: int) -> None:
    s = new()
    s.next_request(0.0)
    assert s.response(0.0, status, ok(3)) == GiveUp(f"http_error {status}")
    assert s.reason == f"http_error {status}"
    with pytest.raises(StateError):
        s.next_request(100.0)


def test_redirect_follows_keeps_query_and_resets_attempt() -> None:
    s = new()
    s.next_request(0.0)
    s.failed(0.0, "x")  # attempt 1, one disconnect
    s.next_request(15.0)
    red = s.response(15.0, 302, [("Location", "/cdn/x.fw?sig=abc")])
    assert red == Redirect("https://files.example.com/cdn/x.fw?sig=abc")
    r = s.next_request(15.0)  # at once, no waiting
    assert r.url == "https://files.example.com/cdn/x.fw?sig=abc"
    assert hdr(r, "X-Retry-Number") == "0"
    assert s.disconnects == 1  # the budget is over the whole download
    # later retries go to the new URL
    s.response(15.0, 200, ok(4))
    s.data(15.0, 2)
    s.failed(16.0, "x")
    r = s.next_request(31.0)
    assert r.url.endswith("/cdn/x.fw?sig=abc")
    assert hdr(r, "Range") == "bytes=2-"


def test_redirect_after_data_keeps_the_offset() -> None:
    s = new()
    s.next_request(0.0)
    s.response(0.0, 200, ok(10))
    s.data(0.0, 4)
    s.failed(0.0, "x")
    s.next_request(15.0)
    s.response(15.0, 307, [("location", "https://other.example/y")])
    r = s.next_request(15.0)
    assert hdr(r, "Range") == "bytes=4-"
    assert s.response(15.0, 206, partial(4, 10)) == Accept(False, 4, 10)


def test_redirect_limits() -> None:
    s = new(RetryPolicy(max_redirects=2))
    for _ in range(2):
        s.next_request(0.0)
        assert isinstance(s.response(0.0, 301, [("Location", "/again")]), Redirect)
    s.next_request(0.0)
    assert s.response(0.0, 301, [("Location", "/again")]) == GiveUp("too_many_redirects")
    s = new()
    s.next_request(0.0)
    assert s.response(0.0, 302, []) == GiveUp("http_error 302")
    s = new()
    s.next_request(0.0)
    assert s.response(0.0, 302, [("Location", "ftp://h/x")]) == GiveUp("bad_redirect")


def test_missing_content_length_completes_at_clean_end() -> None:
    s = new()
    s.next_request(0.0)
    assert s.response(0.0, 200, ok(None)) == Accept(False, 0, None)
    assert s.worst_case_at is None  # not armed without a length
    s.data(0.0, 5)
    assert s.body_end(0.0) == Complete(5)


def test_missing_content_length_resume_learns_total_from_content_range() -> None:
    s = new()
    s.next_request(0.0)
    s.response(0.0, 200, ok(None))
    s.data(0.0, 5)
    s.failed(0.0, "x")
    r = s.next_request(15.0)
    assert hdr(r, "Range") == "bytes=5-"
    assert s.response(15.0, 206, partial(5, 9)) == Accept(False, 5, 9)
    assert s.worst_case_at == 15.0 + 60.0
    s.data(15.0, 4)
    assert s.body_end(15.0) == Complete(9)


def test_short_206_continues_and_short_body_retries() -> None:
    s = new()
    s.next_request(0.0)
    s.response(0.0, 206, partial(0, 10, last=3))
    s.data(0.0, 4)
    assert s.body_end(0.0) == Continue()
    r = s.next_request(0.0)  # at once
    assert (hdr(r, "Range"), hdr(r, "X-Retry-Number"), s.disconnects) == ("bytes=4-", "0", 0)
    s.response(0.0, 206, partial(4, 10))
    s.data(0.0, 2)
    assert s.body_end(1.0) == Retry("incomplete_body", 16.0)
    assert s.disconnects == 1


def test_body_too_long_is_fatal() -> None:
    s = new()
    s.next_request(0.0)
    s.response(0.0, 200, ok(3))
    s.data(0.0, 4)
    assert s.body_end(0.0) == GiveUp("body_too_long")


# -- the retry policy -------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 10])
def test_max_disconnects_means_exactly_n_attempts(n: int) -> None:
    s = new(RetryPolicy(max_disconnects=n, time_between_retries_ms=1))
    now = 0.0
    numbers = []
    while True:
        r = s.next_request(now)
        numbers.append(hdr(r, "X-Retry-Number"))
        out = s.failed(now, "connect_error")
        if isinstance(out, GiveUp):
            break
        now = out.at
    assert out == GiveUp("max_disconnects_reached")
    assert numbers == [str(i) for i in range(n)]
    assert s.stats(now).requests == n


def test_receiving_data_does_not_reset_the_disconnect_count() -> None:
    s = new(RetryPolicy(max_disconnects=2))
    s.next_request(0.0)
    s.response(0.0, 200, ok(10))
    s.data(0.0, 3)
    s.failed(0.0, "x")
    s.next_request(15.0)
    s.response(15.0, 206, partial(3, 10))
    s.data(15.0, 3)
    assert s.failed(15.0, "x") == GiveUp("max_disconnects_reached")


def test_max_timeout() -> None:
    # downloader_test.exs "max_timeout": max_timeout 10 ms → one error then max_timeout_reached
    s = new(RetryPolicy(max_timeout_ms=10, time_between_retries_ms=1), now=100.0)
    s.next_request(100.0)
    retry = s.failed(100.001, "econnrefused")
    assert isinstance(retry, Retry)
    assert s.deadline() == pytest.approx(100.010)
    assert s.check(100.005) is None
    assert s.check(100.010) == GiveUp("max_timeout_reached")
    assert s.phase is Phase.FAILED


def test_worst_case_timer_pauses_while_waiting() -> None:
    s = new()
    s.next_request(0.0)
    assert s.worst_case_at is None
    s.response(10.0, 200, ok(1))  # armed at the first headers: 60 s
    assert s.worst_case_at == 70.0
    s.failed(40.0, "x")  # 30 s used, paused
    assert s.worst_case_at is None
    assert s.check(1000.0) is None
    s.next_request(1000.0)
    assert s.check(1000.0) is None  # still paused while connecting
    s.response(1100.0, 200, ok(1))  # a 200: restart keeps the timer
    assert s.worst_case_at == 1130.0
    assert s.check(1129.9) is None
    assert s.check(1130.0) == GiveUp("worst_case_download_speed_reached")


def test_worst_case_length_20_mib() -> None:
    s = new()
    s.next_request(0.0)
    s.response(0.0, 200, ok(20_971_520))
    assert s.worst_case_at == pytest.approx(5_592.405)


# -- illegal transitions ------------------------------------------------------------


def test_illegal_transitions_raise_and_leave_the_state() -> None:
    s = new()
    for call in (
        lambda: s.response(0.0, 200, ok(1)),
        lambda: s.data(0.0, 1),
        lambda: s.body_end(0.0),
        lambda: s.failed(0.0, "x"),
    ):
        with pytest.raises(StateError):
            call()
        assert s.phase is Phase.READY
    s.next_request(0.0)
    with pytest.raises(StateError):
        s.next_request(0.0)
    with pytest.raises(StateError):
        s.data(0.0, 1)
    assert s.phase is Phase.REQUESTING
    s.response(0.0, 200, ok(1))
    with pytest.raises(StateError):
        s.data(0.0, -1)
    s.data(0.0, 1)
    s.body_end(0.0)
    with pytest.raises(StateError):
        s.failed(0.0, "x")
    assert s.stats(0.0).received == 1
    assert s.phase.value == "done"


# -- properties -------------------------------------------------------------------


class ModelServer:
    """A server in the machine's terms: honours Range unless told to answer 200."""

    def __init__(self, size: int) -> None:
        self.size = size

    def answer(self, r: Request, ignore_range: bool) -> tuple[int, list[tuple[str, str]]]:
        rng = hdr(r, "Range")
        if rng is None or ignore_range:
            return 200, ok(self.size)
        start = int(rng.removeprefix("bytes=").removesuffix("-"))
        return 206, partial(start, self.size)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=300),
    faults=st.lists(st.tuples(st.integers(0, 299), st.booleans()), max_size=8),
)
def test_any_cut_sequence_yields_the_same_bytes(
    data: bytes, faults: list[tuple[int, bool]]
) -> None:
    """Cuts after any count of bytes, and 200-instead-of-206 answers, give the file."""
    server = ModelServer(len(data))
    s = new(RetryPolicy(max_disconnects=len(faults) + 1, time_between_retries_ms=1))
    sink = bytearray()
    now = 0.0
    plan = list(faults)
    retry_numbers = []
    while True:
        r = s.next_request(now)
        retry_numbers.append(int(hdr(r, "X-Retry-Number") or "-1"))
        cut, ignore_range = plan.pop(0) if plan else (None, False)
        status, headers = server.answer(r, ignore_range)
        accept = s.response(now, status, headers)
        assert isinstance(accept, Accept)
        if accept.restart:
            sink.clear()
        assert len(sink) == accept.offset
        body = data[accept.offset :]
        if cut is not None and cut < len(body):
            sink += body[:cut]
            s.data(now, cut)
            out = s.failed(now, "cut")
            assert isinstance(out, Retry)
            now = out.at
            continue
        sink += body
        s.data(now, len(body))
        assert s.body_end(now) == Complete(len(data))
        break
    assert bytes(sink) == data
    assert retry_numbers == list(range(len(retry_numbers)))


@given(
    st.integers(1, 20),
    st.lists(st.sampled_from(["connect", "headers", "data"]), min_size=30, max_size=30),
)
def test_budget_counts_every_kind_of_failure(n: int, kinds: list[str]) -> None:
    s = new(RetryPolicy(max_disconnects=n, time_between_retries_ms=0))
    attempts = 0
    for kind in kinds:
        s.next_request(0.0)
        attempts += 1
        if kind != "connect":
            s.response(0.0, 206 if s.received else 200, partial(s.received, 10**6))
        if kind == "data":
            s.data(0.0, 1)
        out = s.failed(0.0, kind)
        if isinstance(out, GiveUp):
            break
    assert attempts == n
    assert s.reason == "max_disconnects_reached"


@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0, 500)), min_size=1, max_size=10))
def test_worst_case_counts_only_active_time(segments: list[tuple[float, float]]) -> None:
    """Active (response → failure) spans add up; waits in between do not count."""
    s = new(RetryPolicy(max_disconnects=100, max_timeout_ms=MAX_MS))
    now = 0.0
    active = 0.0
    s.next_request(now)
    for run, pause in segments:
        s.response(now, 206 if s.received else 200, partial(s.received, 10**4))
        if active + run >= 60.0:
            assert s.check(now + (60.0 - active) + 1e-6) == GiveUp(
                "worst_case_download_speed_reached"
            )
            return
        assert s.check(now + run) is None
        now += run
        active += run
        s.data(now, 1)
        s.failed(now, "x")
        now += max(pause, 15.0)
        assert s.check(now) is None
        s.next_request(now)
