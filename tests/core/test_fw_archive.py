"""The ZIP stream reader: one large buffer read in pieces equals one call per piece."""

from __future__ import annotations

import io
import itertools
import random
import zipfile

from hypothesis import given, settings
from hypothesis import strategies as st

from nhlink_dbus.core.fw_archive import DataFailed, EntryData, EntryStart, Event, ZipStreamReader
from tests.fwup.expect_records import FIXTURES

ARCHIVES = {name: (FIXTURES / f"{name}.fw").read_bytes() for name in ("ab", "fat", "simple")}
CORRUPT = (FIXTURES / "corrupt-resource-zipcrc.fw").read_bytes()


def per_read(data: bytes, read_size: int) -> list[Event]:
    reader = ZipStreamReader()
    events: list[Event] = []
    for start in range(0, len(data), read_size):
        events += reader.feed(data[start : start + read_size])
    return events + list(reader.finish())


def streamed(data: bytes, read_size: int, cuts: list[int]) -> list[Event]:
    """``data`` in buffers that hold whole reads (split at multiples of ``read_size``)."""
    reader = ZipStreamReader()
    events: list[Event] = []
    bounds = sorted({0, len(data), *(min(c * read_size, len(data)) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        events.extend(reader.stream(data[start:end], read_size))
    assert reader.consumed == len(data) or reader.finished
    return events + list(reader.finish())


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(ARCHIVES)),
    read_size=st.sampled_from([61, 512, 4093, 16384]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_stream_equals_one_feed_per_read(name: str, read_size: int, cuts: list[int]) -> None:
    data = ARCHIVES[name]
    assert streamed(data, read_size, cuts) == per_read(data, read_size)


@given(read_size=st.sampled_from([512, 16384]), cuts=st.lists(st.integers(0, 50), max_size=3))
def test_stream_fails_where_one_feed_per_read_does(read_size: int, cuts: list[int]) -> None:
    events = streamed(CORRUPT, read_size, cuts)
    failed = [e for e in events if isinstance(e, DataFailed)]
    assert len(failed) == 1 and failed[0].text.startswith("ZIP bad CRC")
    assert events == per_read(CORRUPT, read_size)


# -- several reads in one event (ZipStreamReader.bulk_limit) -----------------------------


class _Unseekable(io.RawIOBase):
    """A sink zipfile cannot seek in: it writes each entry's sizes after its data."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.data += b
        return len(memoryview(b))


def _zip(descriptors: bool) -> bytes:
    rng = random.Random(5)
    content = b"".join(
        rng.randbytes(40000) if i % 3 else bytes([i]) * 90000 + rng.randbytes(3000)
        for i in range(12)
    )
    sink: io.BytesIO | _Unseekable = _Unseekable() if descriptors else io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.conf", b"x" * 100)
        zf.writestr("data/rootfs.img", content)
        zf.writestr("data/after", rng.randbytes(5000))
    return bytes(sink.data if isinstance(sink, _Unseekable) else sink.getvalue())


BULK_ARCHIVES = {"sized": _zip(False), "descriptors": _zip(True)}


def _events(data: bytes, read_size: int, bulk_limit: int, chunk: int) -> list[Event]:
    reader = ZipStreamReader()
    events: list[Event] = []
    for start in range(0, len(data), chunk):
        for ev in reader.stream(data[start : start + chunk], read_size):
            events.append(ev)
            if isinstance(ev, EntryStart):
                reader.bulk_limit = bulk_limit if ev.name == "data/rootfs.img" else 0
    return events + list(reader.finish())


def _boundaries(events: list[Event]) -> tuple[list[object], set[tuple[int, int]], list[bytes]]:
    """(the other events in order, the data event boundaries as (run, offset), the data
    of each run between other events)."""
    others: list[object] = []
    bounds: set[tuple[int, int]] = set()
    runs: list[bytes] = [b""]
    for ev in events:
        if isinstance(ev, EntryData):
            if ev.tail:
                bounds.add((len(others), len(runs[-1]) + len(ev.data) - ev.tail))
            runs[-1] += ev.data
            bounds.add((len(others), len(runs[-1])))
        else:
            others.append(ev)
            runs.append(b"")
    return others, bounds, runs


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(BULK_ARCHIVES)),
    damage=st.one_of(
        st.none(),
        st.tuples(st.integers(200, 300000), st.integers(1, 255)),  # flip bits of a byte
        st.integers(200, 300000).map(lambda at: (at, 0)),  # cut the archive there
    ),
    read_size=st.sampled_from([4096, 16384]),
    chunk=st.sampled_from([1 << 20, 65536, 100000]),
)
def test_bulk_reads_change_only_how_data_is_grouped(
    name: str, damage: tuple[int, int] | None, read_size: int, chunk: int
) -> None:
    """The same events, data and failures as one event per read, and every event
    boundary (and every tail's start) is one of those of one event per read."""
    data = bytearray(BULK_ARCHIVES[name])
    if damage is not None:
        at, xor = damage
        if xor:
            data[at % len(data)] ^= xor
        else:
            del data[at % len(data) :]
    one, bulk = (_events(bytes(data), read_size, limit, chunk) for limit in (0, 8 << 20))
    one_others, one_bounds, one_runs = _boundaries(one)
    bulk_others, bulk_bounds, bulk_runs = _boundaries(bulk)
    assert bulk_others == one_others
    assert bulk_runs == one_runs
    assert bulk_bounds <= one_bounds
    if damage is None:
        assert len(bulk) < len(one)  # it did group reads


def test_no_bulk_reads_without_a_limit() -> None:
    events = _events(BULK_ARCHIVES["sized"], 16384, 0, 1 << 20)
    assert all(ev.tail == 0 for ev in events if isinstance(ev, EntryData))
