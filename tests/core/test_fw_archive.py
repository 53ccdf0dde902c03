"""The ZIP stream reader: one large buffer read in pieces equals one call per piece."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from nhlink_dbus.core.fw_archive import DataFailed, Event, ZipStreamReader
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
