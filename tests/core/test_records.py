"""Record classes (nhlink_dbus.core.records) behave as the dataclasses they replace."""

from __future__ import annotations

import dataclasses

import pytest

from nhlink_dbus.core.records import (
    FrozenInstanceError,
    dataclass,
    field,
    fields,
    replace,
)


@dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple, repr=False)
    note: str = field(default="", metadata={"unit": "mm"})


@dataclass(slots=True)
class Counter:
    name: str
    seen: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    fast: bool
    level: int = 3


@dataclass
class Plain:
    value: int = 5


@dataclass(frozen=True, slots=True)
class Checked:
    size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("size must not be negative")


@dataclasses.dataclass(frozen=True, slots=True)
class StdPoint:
    x: int
    y: int = 0
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple, repr=False)
    note: str = dataclasses.field(default="", metadata={"unit": "mm"})


def test_construction_repr_and_equality_match_dataclasses() -> None:
    for args, kwargs in [((1,), {}), ((1, 2), {}), ((1,), {"note": "n"}), ((), {"x": 3, "y": 4})]:
        ours, std = Point(*args, **kwargs), StdPoint(*args, **kwargs)
        assert repr(ours).replace("Point", "") == repr(std).replace("StdPoint", "")
        assert (ours.x, ours.y, ours.tags, ours.note) == (std.x, std.y, std.tags, std.note)
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(1, 3)
    assert Point(1) != StdPoint(1)  # another class: not equal, as dataclasses
    assert hash(Point(1, 2, ("a",))) == hash(Point(1, 2, ("a",)))
    assert {Point(1), Point(1)} == {Point(1)}


def test_frozen_slots_and_unhashable_mutable_records() -> None:
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y  # type: ignore[misc]
    assert not hasattr(p, "__dict__")
    c = Counter("a")
    c.seen.append(1)
    assert Counter("a").seen == []  # a fresh list each time
    c.name = "b"
    with pytest.raises(TypeError):
        hash(c)
    assert Plain().value == 5 and Plain.value == 5  # a plain class keeps its default


def test_argument_errors() -> None:
    with pytest.raises(TypeError, match="missing 1 required argument: 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes 5 positional arguments but 6 were given"):
        Point(1, 2, (), "n", 5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Point(1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="takes 1 positional arguments"):
        Options(True)  # type: ignore[misc]
    assert Options(fast=True) == Options(fast=True, level=3)


def test_post_init_fields_and_replace() -> None:
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)
    with pytest.raises(ValueError, match="negative"):
        replace(Checked(1), size=-1)  # __post_init__ runs again
    assert [f.name for f in fields(Point)] == ["x", "y", "tags", "note"]
    assert fields(Point(1))[3].metadata == {"unit": "mm"}
    assert replace(Point(1, 2), y=5) == Point(1, 5)
    with pytest.raises(TypeError):
        replace(Point(1), z=1)
    with pytest.raises(TypeError):
        fields(object())
    with pytest.raises(ValueError):
        field(default=1, default_factory=int)


def test_a_record_may_not_inherit_a_record() -> None:
    with pytest.raises(TypeError, match="do not inherit"):

        @dataclass(frozen=True, slots=True)
        class Child(Point):  # type: ignore[misc]
            z: int = 0
