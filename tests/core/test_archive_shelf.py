"""Archives in the core: the ready shelf, re-offers, a second offer while downloading,
and the folder's bounds (core/archive_manager.py, LinkCore)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core import link
from nhlink_dbus.core.archive_manager import (
    FetchResult,
    ShelfBounds,
    ShelfItem,
    StartArchiveDownload,
    plan_eviction,
)
from nhlink_dbus.core.update_manager import ReportError
from tests.core.test_link import archive, core, of

PATH = "/var/lib/nhlink/archives/arch.fw"


def ready_core() -> link.LinkCore:
    c = core()
    (ask,) = of(link.Announce, c.hub_event(archive(), now=0.0))
    (start,) = of(StartArchiveDownload, c.decide(ask.request_id, "download", 0, "me", now=1.0))  # type: ignore[attr-defined]
    c.archive_done(start.request_id, FetchResult(PATH), now=2.0)  # type: ignore[attr-defined]
    return c


def test_ready_archives_are_listed() -> None:
    c = ready_core()
    ((path, info),) = c.ready_archives()
    assert path == PATH and info["uuid"] == "arch" and info["source"] == "hub"


def test_an_archive_on_the_shelf_is_ready_again_without_a_question() -> None:
    c = ready_core()
    out = c.hub_event(archive(), now=10.0)
    assert of(link.Announce, out) == []
    (made,) = of(link.DecisionMade, out)
    assert (made.decision, made.decided_by) == ("download", "policy")  # type: ignore[attr-defined]
    (start,) = of(StartArchiveDownload, out)
    assert start.recheck  # type: ignore[attr-defined]
    out = c.archive_done(start.request_id, FetchResult(PATH), now=11.0)  # type: ignore[attr-defined]
    assert [type(e) for e in out] == [link.ArchiveReady]


def test_a_shelf_entry_whose_file_went_away_is_asked_afresh() -> None:
    c = ready_core()
    (start,) = of(StartArchiveDownload, c.hub_event(archive(), now=10.0))
    gone = FetchResult(error="not in the archives folder any more", missing=True)
    out = c.archive_done(start.request_id, gone, now=11.0)  # type: ignore[attr-defined]
    (ask,) = of(link.Announce, out)
    assert ask.kind == "archive" and c.ready_archives() == []  # type: ignore[attr-defined]
    assert of(ReportError, out) == []


def test_evicted_archives_leave_the_shelf() -> None:
    c = ready_core()
    (ask,) = of(link.Announce, c.hub_event(archive("other"), now=3.0))
    (start,) = of(StartArchiveDownload, c.decide(ask.request_id, "download", 0, "me", now=4.0))  # type: ignore[attr-defined]
    c.archive_done(start.request_id, FetchResult("/x/other.fw", evicted=("arch",)), now=5.0)  # type: ignore[attr-defined]
    assert [p for p, _ in c.ready_archives()] == ["/x/other.fw"]


def test_a_second_offer_while_downloading_is_dropped() -> None:
    c = core()
    (ask,) = of(link.Announce, c.hub_event(archive(), now=0.0))
    c.decide(ask.request_id, "download", 0, "me", now=1.0)  # type: ignore[attr-defined]
    assert c.hub_event(archive(), now=2.0) == []
    assert c.pending_requests() == []


# -- bounds ------------------------------------------------------------------------------------

DAY = 86_400.0
BOUNDS = ShelfBounds(max_bytes=100, max_count=3, keep_ready_ms=int(DAY * 1000))


def test_oldest_first_never_the_recent_ones() -> None:
    now = 10 * DAY
    items = [
        ShelfItem("old", 40, now - 5 * DAY),
        ShelfItem("older", 10, now - 6 * DAY),
        ShelfItem("recent", 40, now - 60),
    ]
    new = ShelfItem("new", 30, now)
    # count 4 > 3 and 120 bytes > 100: the two old ones go, oldest first, as needed
    assert plan_eviction(items, new, BOUNDS, now) == (["older", "old"], False)
    # only protected ones left: exceeded for the newcomer
    recent = [ShelfItem(f"r{i}", 40, now - i) for i in range(3)]
    assert plan_eviction(recent, new, BOUNDS, now) == ([], True)
    # the same uuid again is the newcomer itself, not another archive
    assert plan_eviction([ShelfItem("new", 90, now - 7 * DAY)], new, BOUNDS, now) == ([], False)


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.floats(0, 3 * DAY)), max_size=8, unique_by=lambda t: t
    ),
    st.integers(0, 120),
)
def test_eviction_rules_hold(sizes_ages: list[tuple[int, float]], size: int) -> None:
    now = 10 * DAY
    items = [ShelfItem(f"a{i}", s, now - age) for i, (s, age) in enumerate(sizes_ages)]
    new = ShelfItem("new", size, now)
    evict, exceeded = plan_eviction(items, new, BOUNDS, now)
    kept = [i for i in items if i.uuid not in evict]
    assert all(now - i.ready_at >= DAY for i in items if i.uuid in evict)  # never a recent one
    over = len(kept) + 1 > BOUNDS.max_count or sum(i.size for i in kept) + size > BOUNDS.max_bytes
    assert exceeded == over
    if evict:  # nothing was removed that was not needed: without the last one it was over
        last = next(i for i in items if i.uuid == evict[-1])
        assert len(kept) + 2 > BOUNDS.max_count or (
            sum(i.size for i in kept) + last.size + size > BOUNDS.max_bytes
        )
        evicted_ages = [i.ready_at for i in items if i.uuid in evict]
        kept_old = [i.ready_at for i in kept if now - i.ready_at >= DAY]
        assert not kept_old or max(evicted_ages) <= min(kept_old)  # oldest first
