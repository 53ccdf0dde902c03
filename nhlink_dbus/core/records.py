"""Record classes: the part of :mod:`dataclasses` this project uses, made cheaply.

``dataclasses`` writes each class's ``__init__``, ``__repr__``, ``__eq__``,
``__hash__`` and frozen ``__setattr__`` as source text and compiles it with
``exec``: about a millisecond a class here, and the service defines some 130 of
them before it can own its bus name (135 ms of a 230 ms import, measured), while
``nhlink-fwup`` pays 40 ms of its start-up for 25. The same methods are built
here from closures over each class's field list, with no compiling, so a class
costs tens of microseconds.

Supported, with ``dataclasses``' meaning: ``frozen``, ``slots``, ``kw_only`` and
``eq``; :func:`field` with ``default``, ``default_factory``, ``repr`` and
``metadata``; ``__post_init__``; :func:`fields` and :func:`replace`. A method the
class defines itself is kept. Records do not inherit fields from other records
(none here do; the decorator refuses it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from types import MappingProxyType

TYPE_CHECKING = False  # without importing typing (nhlink_dbus/core/lean.py)
if not TYPE_CHECKING:
    from nhlink_dbus.core.lean import dataclass_transform, overload
else:
    from typing import Any, TypeVar, dataclass_transform, overload

    _T = TypeVar("_T")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_EMPTY: Mapping[Any, Any] = MappingProxyType({})


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class Field:
    """One field: its name, default or default factory, and metadata."""

    __slots__ = ("default", "default_factory", "metadata", "name", "repr")

    def __init__(
        self,
        default: Any,
        default_factory: Any,
        repr: bool,
        metadata: Mapping[Any, Any] | None,
    ) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.metadata: Mapping[Any, Any] = MappingProxyType(dict(metadata)) if metadata else _EMPTY

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, default={self.default!r})"


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] = MISSING,
    repr: bool = True,
    metadata: Mapping[Any, Any] | None = None,
) -> Any:
    """A field with options, as :func:`dataclasses.field`."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, repr, metadata)


def fields(cls_or_record: Any) -> tuple[Field, ...]:
    """The fields of a record class or record, in order."""
    found: tuple[Field, ...] | None = getattr(cls_or_record, "__record_fields__", None)
    if found is None:
        raise TypeError("must be called with a record class or instance")
    return found


def replace(obj: _T, /, **changes: Any) -> _T:
    """A copy of ``obj`` with some fields changed (``__post_init__`` runs again)."""
    names = [f.name for f in fields(obj)]
    for name in names:
        if name not in changes:
            changes[name] = getattr(obj, name)
    return type(obj)(**changes)


@overload
def dataclass(cls: type[_T], /) -> type[_T]: ...


@overload
def dataclass(
    *, frozen: bool = False, slots: bool = False, kw_only: bool = False, eq: bool = True
) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(field_specifiers=(field, Field))
def dataclass(
    cls: type[_T] | None = None,
    /,
    *,
    frozen: bool = False,
    slots: bool = False,
    kw_only: bool = False,
    eq: bool = True,
) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Make ``cls`` a record class, as :func:`dataclasses.dataclass` would."""

    def wrap(cls: type[_T]) -> type[_T]:
        return _process(cls, frozen=frozen, slots=slots, kw_only=kw_only, eq=eq)

    return wrap if cls is None else wrap(cls)


def _process(cls: type[_T], *, frozen: bool, slots: bool, kw_only: bool, eq: bool) -> type[_T]:
    for base in cls.__mro__[1:]:
        if "__record_fields__" in base.__dict__:
            raise TypeError(f"{cls.__name__}: records do not inherit from records")
    own = cls.__dict__
    spec: list[Field] = []
    for name in own.get("__annotations__", {}):
        value = own.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(value, MISSING, True, None)
        f.name = name
        spec.append(f)
    ns = dict(own)
    if slots:
        for f in spec:
            ns.pop(f.name, None)
        ns.pop("__dict__", None)
        ns.pop("__weakref__", None)
        ns["__slots__"] = tuple(f.name for f in spec)
    else:
        for f in spec:
            # A plain class attribute holds the default (as dataclasses leave it); a
            # factory's field has none.
            if f.default is MISSING:
                ns.pop(f.name, None)
            else:
                ns[f.name] = f.default
    ns["__record_fields__"] = tuple(spec)
    methods = _methods(
        cls.__qualname__,
        spec,
        frozen=frozen,
        kw_only=kw_only,
        eq=eq,
        post_init="__post_init__" in own,
    )
    for name, method in methods.items():
        if name not in own or (name == "__hash__" and own.get("__hash__") is None and eq):
            ns[name] = method
    meta: Callable[..., type[_T]] = type(cls)
    new = meta(cls.__name__, cls.__bases__, ns)
    new.__qualname__ = cls.__qualname__
    return new


def _methods(
    qualname: str, spec: list[Field], *, frozen: bool, kw_only: bool, eq: bool, post_init: bool
) -> dict[str, Any]:
    names = tuple(f.name for f in spec)
    count = len(names)
    positional = 0 if kw_only else count
    defaults = {f.name: f.default for f in spec if f.default is not MISSING}
    factories = {f.name: f.default_factory for f in spec if f.default_factory is not MISSING}
    shown = tuple(f.name for f in spec if f.repr)
    short = qualname.rsplit(".", 1)[-1]
    set_field = object.__setattr__
    get = attrgetter(*names) if names else (lambda _obj: ())
    values: Callable[[Any], Any] = get if count != 1 else (lambda obj: (get(obj),))

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        given = len(args)
        if given > positional:
            raise TypeError(
                f"{short}.__init__() takes {positional + 1} positional arguments"
                f" but {given + 1} were given"
            )
        if given == count:
            for name, value in zip(names, args, strict=True):
                set_field(self, name, value)
            if kwargs:
                _extra(short, names, kwargs)
        else:
            for name, value in zip(names, args, strict=False):
                set_field(self, name, value)
            for name in names[given:]:
                if name in kwargs:
                    value = kwargs.pop(name)
                elif name in defaults:
                    value = defaults[name]
                elif name in factories:
                    value = factories[name]()
                else:
                    missing = [n for n in names[given:] if n not in kwargs and _required(n)]
                    listed = ", ".join(repr(n) for n in missing)
                    raise TypeError(
                        f"{short}.__init__() missing {len(missing)} required"
                        f" argument{'s' if len(missing) > 1 else ''}: {listed}"
                    )
                set_field(self, name, value)
            if kwargs:
                _extra(short, names, kwargs)
        if post_init:
            self.__post_init__()

    def _required(name: str) -> bool:
        return name not in defaults and name not in factories

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{qualname}({inner})"

    methods: dict[str, Any] = {"__init__": __init__, "__repr__": __repr__}
    if eq:

        def __eq__(self: Any, other: object) -> bool:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return bool(values(self) == values(other))

        methods["__eq__"] = __eq__
        if frozen:

            def __hash__(self: Any) -> int:
                return hash(values(self))

            methods["__hash__"] = __hash__
        else:
            methods["__hash__"] = None
    if frozen:

        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise FrozenInstanceError(f"cannot assign to field '{name}'")

        def __delattr__(self: Any, name: str) -> None:
            raise FrozenInstanceError(f"cannot delete field '{name}'")

        methods["__setattr__"] = __setattr__
        methods["__delattr__"] = __delattr__
    return methods


def _extra(short: str, names: tuple[str, ...], kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    if name in names:
        raise TypeError(f"{short}.__init__() got multiple values for argument '{name}'")
    raise TypeError(f"{short}.__init__() got an unexpected keyword argument '{name}'")
