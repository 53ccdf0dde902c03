"""The typed content of a ``.fw`` archive's ``meta.conf``.

:func:`load_meta_conf` turns the libconfuse tree (see :mod:`.confuse`) into
frozen dataclasses and refuses, by name and before anything is written, every
option, section or action this applier does not implement.

Actions are stored by fwup as ``funlist={N,name,arg,...}`` where N counts the
name plus its arguments; several actions follow each other in one list.
Requirements use the same shape in ``reqlist``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nhlink_dbus.core import confuse
from nhlink_dbus.errors import FirmwareError

META_KEYS = (
    "meta-product",
    "meta-description",
    "meta-version",
    "meta-author",
    "meta-platform",
    "meta-architecture",
    "meta-creation-date",
    "meta-fwup-version",
    "meta-misc",
    "meta-vcs-identifier",
)

# Actions this applier performs (fwup's names); host-touching ones are gated.
HOST_ACTIONS = frozenset({"path_write", "pipe_write", "execute"})
SUPPORTED_ACTIONS = frozenset(
    {
        "raw_write",
        "raw_memset",
        "mbr_write",
        "gpt_write",
        "uboot_clearenv",
        "uboot_setenv",
        "uboot_unsetenv",
        "uboot_recover",
        "fat_mkfs",
        "fat_write",
        "fat_mv",
        "fat_mv!",
        "fat_rm",
        "fat_rm!",
        "fat_cp",
        "fat_mkdir",
        "fat_setlabel",
        "fat_touch",
        "fat_attrib",
        "info",
        "error",
        "trim",
        "reboot_param",
    }
    | HOST_ACTIONS
)
# Actions that consume the resource's bytes (only valid in on-resource).
RESOURCE_ACTIONS = frozenset({"raw_write", "fat_write", "path_write", "pipe_write"})
SUPPORTED_REQUIREMENTS = frozenset(
    {
        "require-partition-offset",
        "require-uboot-variable",
        "require-path-on-device",
        "require-path-at-offset",
        "require-fat-file-exists",
        "require-fat-file-match",
    }
)
_ARITY = {  # argument counts (without the name), as fwup validates them
    "raw_write": (1, 3),
    "raw_memset": (3, 3),
    "mbr_write": (1, 1),
    "gpt_write": (1, 1),
    "uboot_clearenv": (1, 1),
    "uboot_setenv": (3, 3),
    "uboot_unsetenv": (2, 2),
    "uboot_recover": (1, 1),
    "fat_mkfs": (2, 2),
    "fat_write": (2, 2),
    "fat_mv": (3, 3),
    "fat_mv!": (3, 3),
    "fat_rm": (2, 2),
    "fat_rm!": (2, 2),
    "fat_cp": (3, 3),
    "fat_mkdir": (2, 2),
    "fat_setlabel": (2, 2),
    "fat_touch": (2, 2),
    "fat_attrib": (3, 3),
    "info": (1, 1),
    "error": (1, 1),
    "trim": (2, 2),
    "reboot_param": (1, 1),
    "path_write": (1, 1),
    "pipe_write": (1, 1),
    "execute": (1, 1),
    "require-partition-offset": (2, 2),
    "require-uboot-variable": (3, 3),
    "require-path-on-device": (2, 2),
    "require-path-at-offset": (2, 2),
    "require-fat-file-exists": (2, 2),
    "require-fat-file-match": (3, 3),
}


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FileResource:
    name: str
    length: int
    blake2b_256: str


@dataclass(frozen=True, slots=True)
class MbrPartition:
    index: int
    block_offset: int
    block_count: int
    type: int
    boot: bool
    expand: bool


@dataclass(frozen=True, slots=True)
class Mbr:
    name: str
    signature: int
    partitions: tuple[MbrPartition, ...]


@dataclass(frozen=True, slots=True)
class UbootEnvironment:
    name: str
    block_offset: int
    block_count: int


@dataclass(frozen=True, slots=True)
class GptSection:
    """A ``gpt`` section as plain values; :mod:`.gpt` builds the table."""

    name: str
    options: Mapping[str, str]
    partitions: tuple[tuple[str, Mapping[str, str]], ...]  # (index title, options)


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    requirements: tuple[Action, ...]
    on_init: tuple[Action, ...]
    on_finish: tuple[Action, ...]
    on_error: tuple[Action, ...]
    on_resource: Mapping[str, tuple[Action, ...]]


@dataclass(frozen=True, slots=True)
class MetaConf:
    meta: Mapping[str, str]
    resources: Mapping[str, FileResource]
    mbrs: Mapping[str, Mbr]
    gpts: Mapping[str, GptSection]
    uboot_envs: Mapping[str, UbootEnvironment]
    tasks: tuple[Task, ...]
    raw: bytes = field(repr=False, default=b"")


def parse_int(text: str, what: str) -> int:
    """An integer as libconfuse/strtoul read it: decimal, 0x hex or 0 octal."""
    t = text.strip()
    try:
        if t.lower().startswith(("0x", "-0x")):
            return int(t, 16)
        if len(t) > 1 and t.startswith("0") and t.isdigit():
            return int(t, 8)
        return int(t, 10)
    except ValueError:
        raise FirmwareError(f"{what}: expecting an integer, got '{text}'") from None


def _bool(text: str, what: str) -> bool:
    low = text.lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    raise FirmwareError(f"{what}: expecting a boolean, got '{text}'")


def _scalar(section: confuse.Section, key: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if len(value) != 1:
        raise FirmwareError(f"'{key}' in {section.name} '{section.title}' must be a single value")
    return value[0]


def _check_keys(section: confuse.Section, allowed: frozenset[str], where: str) -> None:
    for key, _value, _is_list in section.options:
        if key not in allowed:
            raise FirmwareError(f"Unsupported option '{key}' in {where} (not implemented here)")


def parse_funlist(items: tuple[str, ...], where: str) -> tuple[Action, ...]:
    """Split ``{N,name,args...,N,name,...}`` into actions and check them."""
    actions: list[Action] = []
    pos = 0
    while pos < len(items):
        count = parse_int(items[pos], f"{where}: function list")
        if count < 1 or pos + 1 + count > len(items):
            raise FirmwareError(f"{where}: malformed function list")
        name = items[pos + 1]
        args = tuple(items[pos + 2 : pos + 1 + count])
        arity = _ARITY.get(name)
        if arity is not None and not arity[0] <= len(args) <= arity[1]:
            raise FirmwareError(f"{where}: {name} takes {arity[0]} argument(s), got {len(args)}")
        actions.append(Action(name, args))
        pos += 1 + count
    return tuple(actions)


def _actions(section: confuse.Section, where: str) -> tuple[Action, ...]:
    _check_keys(section, frozenset({"funlist"}), where)
    out: list[Action] = []
    for key, value, _ in section.options:
        if key == "funlist":
            out.extend(parse_funlist(value, where))
    for action in out:
        if action.name not in SUPPORTED_ACTIONS:
            raise FirmwareError(f"Unsupported function '{action.name}' in {where}")
    return tuple(out)


def _task(sec: confuse.Section) -> Task:
    name = sec.title or ""
    where = f"task '{name}'"
    _check_keys(sec, frozenset({"reqlist", "verify-on-the-fly", "require-unsafe"}), where)
    reqs: list[Action] = []
    for key, value, _ in sec.options:
        if key == "reqlist":
            reqs.extend(parse_funlist(value, where))
    for req in reqs:
        if req.name not in SUPPORTED_REQUIREMENTS:
            raise FirmwareError(f"Unsupported requirement '{req.name}' in {where}")
    on_init: tuple[Action, ...] = ()
    on_finish: tuple[Action, ...] = ()
    on_error: tuple[Action, ...] = ()
    on_resource: dict[str, tuple[Action, ...]] = {}
    for child in sec.children:
        if child.name == "on-init":
            on_init = _actions(child, f"{where} on-init")
        elif child.name == "on-finish":
            on_finish = _actions(child, f"{where} on-finish")
        elif child.name == "on-error":
            on_error = _actions(child, f"{where} on-error")
        elif child.name == "on-resource" and child.title:
            on_resource[child.title] = _actions(child, f"{where} on-resource '{child.title}'")
        else:
            raise FirmwareError(f"Unsupported section '{child.name}' in {where}")
    for block in (on_init, on_finish, on_error):
        for action in block:
            if action.name in RESOURCE_ACTIONS:
                raise FirmwareError(f"{action.name} only usable in on-resource")
    return Task(name, tuple(reqs), on_init, on_finish, on_error, on_resource)


def load_meta_conf(text: bytes, variables: Mapping[str, str] | None = None) -> MetaConf:
    """Parse and check a ``meta.conf``; raise :class:`FirmwareError` if unusable."""
    try:
        root = confuse.parse(text.decode("utf-8"), variables)
    except UnicodeDecodeError:
        raise FirmwareError("meta.conf is not valid UTF-8") from None
    except confuse.ConfuseError as exc:
        raise FirmwareError(f"Error parsing meta.conf: {exc}") from None
    meta: dict[str, str] = {}
    for key, value, _ in root.options:
        if key in META_KEYS:
            meta[key] = value[0] if value else ""
        elif key == "require-fwup-version":
            continue  # we implement fwup's 1.x action set; the check is advisory
        else:
            raise FirmwareError(f"Unsupported option '{key}' in meta.conf")
    resources: dict[str, FileResource] = {}
    mbrs: dict[str, Mbr] = {}
    gpts: dict[str, GptSection] = {}
    envs: dict[str, UbootEnvironment] = {}
    tasks: list[Task] = []
    for sec in root.children:
        title = sec.title or ""
        if sec.name == "file-resource":
            resources[title] = _file_resource(sec)
        elif sec.name == "mbr":
            mbrs[title] = _mbr(sec)
        elif sec.name == "gpt":
            gpts[title] = _gpt(sec)
        elif sec.name == "uboot-environment":
            envs[title] = _uboot_env(sec)
        elif sec.name == "task":
            tasks.append(_task(sec))
        else:
            raise FirmwareError(f"Unsupported section '{sec.name}' in meta.conf")
    return MetaConf(meta, resources, mbrs, gpts, envs, tuple(tasks), raw=text)


def _file_resource(sec: confuse.Section) -> FileResource:
    where = f"file-resource '{sec.title}'"
    _check_keys(sec, frozenset({"length", "blake2b-256", "skip-holes"}), where)
    length = sec.get("length")
    digest = _scalar(sec, "blake2b-256")
    if length is None or digest is None:
        raise FirmwareError(f"{where} is missing its length or blake2b-256")
    if len(length) != 1:
        raise FirmwareError(f"{where}: sparse resources are not supported")
    if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
        raise FirmwareError(f"invalid blake2b hash for '{sec.title}'")
    return FileResource(sec.title or "", parse_int(length[0], where), digest.lower())


def _mbr(sec: confuse.Section) -> Mbr:
    where = f"mbr '{sec.title}'"
    _check_keys(sec, frozenset({"signature"}), where)
    sig = _scalar(sec, "signature")
    parts: list[MbrPartition] = []
    for child in sec.children:
        pwhere = f"{where} partition {child.title}"
        if child.name != "partition":
            raise FirmwareError(f"Unsupported section '{child.name}' in {where}")
        _check_keys(
            child, frozenset({"block-offset", "block-count", "type", "boot", "expand"}), pwhere
        )
        index = parse_int(child.title or "", pwhere)
        if not 0 <= index <= 3:
            raise FirmwareError(f"{pwhere}: partition index must be 0..3")
        parts.append(
            MbrPartition(
                index=index,
                block_offset=parse_int(_scalar(child, "block-offset") or "0", pwhere),
                block_count=parse_int(_scalar(child, "block-count") or "0", pwhere),
                type=parse_int(_scalar(child, "type") or "0", pwhere),
                boot=_bool(_scalar(child, "boot") or "false", pwhere),
                expand=_bool(_scalar(child, "expand") or "false", pwhere),
            )
        )
    return Mbr(sec.title or "", parse_int(sig, where) if sig else 0, tuple(parts))


def _gpt(sec: confuse.Section) -> GptSection:
    opts = {k: v[0] if len(v) == 1 else ",".join(v) for k, v, _ in sec.options}
    parts = []
    for child in sec.children:
        if child.name != "partition":
            raise FirmwareError(f"Unsupported section '{child.name}' in gpt '{sec.title}'")
        parts.append(
            (
                child.title or "",
                {k: v[0] if len(v) == 1 else ",".join(v) for k, v, _ in child.options},
            )
        )
    return GptSection(sec.title or "", opts, tuple(parts))


def _uboot_env(sec: confuse.Section) -> UbootEnvironment:
    where = f"uboot-environment '{sec.title}'"
    _check_keys(sec, frozenset({"block-offset", "block-count"}), where)
    off = _scalar(sec, "block-offset")
    count = _scalar(sec, "block-count")
    if off is None or count is None:
        raise FirmwareError(f"{where} needs block-offset and block-count")
    return UbootEnvironment(sec.title or "", parse_int(off, where), parse_int(count, where))
