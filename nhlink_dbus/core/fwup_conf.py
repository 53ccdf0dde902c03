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

from nhlink_dbus.core import confuse
from nhlink_dbus.core.records import dataclass, field
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
        "require-execute",
    }
)
_ARITY = {  # argument counts (without the name), as fwup validates them
    "raw_write": (1, 9),  # an offset, then disk_crypto options (argc <= FUN_MAX_ARGS)
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
    "fat_cp": (3, 4),
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
    "require-execute": (1, 1),
}


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FileResource:
    """A ``file-resource``. ``length=`` is fwup's sparse map: the lengths of data and
    hole runs in turn, starting with data (``{0,hole,data,...}`` when the file starts
    with a hole); one entry for a plain file; absent (libconfuse's default, 0) for an
    empty one. The archive holds the data runs back to back."""

    name: str
    length: int  # bytes in the archive: the sum of the data runs
    blake2b_256: str  # as written; "" when absent (an error only when a task uses it)
    sparse_map: tuple[int, ...] = ()  # the runs; () stands for (length,)

    @property
    def runs(self) -> tuple[int, ...]:
        return self.sparse_map or (self.length,)

    @property
    def size(self) -> int:
        """The resource as written out: data and holes."""
        return sum(self.runs)

    @property
    def ending_hole(self) -> int:
        runs = self.runs
        return runs[-1] if len(runs) % 2 == 0 else 0


@dataclass(frozen=True, slots=True)
class MbrPartition:
    index: int
    block_offset: int
    block_count: int
    type: int
    boot: bool
    expand: bool


@dataclass(frozen=True, slots=True)
class OsipImage:
    """One ``osii`` section of an MBR's Intel OSIP header."""

    os_major: int = 0
    os_minor: int = 0
    start_block_offset: int = 0
    ddr_load_address: int = 0
    entry_point: int = 0
    image_size_blocks: int = 0
    attribute: int = 0xF


@dataclass(frozen=True, slots=True)
class Osip:
    major: int
    minor: int
    num_pointers: int
    images: Mapping[int, OsipImage]


@dataclass(frozen=True, slots=True)
class Mbr:
    name: str
    signature: int
    partitions: tuple[MbrPartition, ...]
    bootstrap: bytes | None = None  # 440 bytes of boot code
    osip: Osip | None = None


@dataclass(frozen=True, slots=True)
class UbootEnvironment:
    name: str
    block_offset: int
    block_count: int
    # Second copy of a redundant environment (``block-offset-redund``), in blocks.
    block_offset_redund: int | None = None


@dataclass(frozen=True, slots=True)
class GptSection:
    """A ``gpt`` section as plain values; :mod:`.gpt` builds the table."""

    name: str
    options: Mapping[str, str]
    partitions: tuple[tuple[str, Mapping[str, str]], ...]  # (index title, options)


@dataclass(frozen=True, slots=True)
class DeltaSource:
    """An on-resource's ``delta-source-*`` options (cfgfile.c), as fwup reads them when
    the resource turns out to be an xdelta3 patch: the offsets are strings (fwup
    converts them with strtoul when applying); ``raw_count`` is in blocks,
    libconfuse's default INT32_MAX when absent."""

    raw_offset: str | None = None
    raw_count: int = 0x7FFFFFFF
    raw_options: str | None = None
    fat_offset: str | None = None
    fat_path: str | None = None


_DELTA_KEYS = frozenset(
    {
        "delta-source-raw-offset",
        "delta-source-raw-count",
        "delta-source-raw-options",
        "delta-source-fat-offset",
        "delta-source-fat-path",
    }
)


def _delta_source(section: confuse.Section, where: str) -> DeltaSource | None:
    if not any(key in _DELTA_KEYS for key, _value, _is_list in section.options):
        return None
    count = _scalar(section, "delta-source-raw-count")
    return DeltaSource(
        raw_offset=_scalar(section, "delta-source-raw-offset"),
        raw_count=0x7FFFFFFF if count is None else parse_int(count, where),
        raw_options=_scalar(section, "delta-source-raw-options"),
        fat_offset=_scalar(section, "delta-source-fat-offset"),
        fat_path=_scalar(section, "delta-source-fat-path"),
    )


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    requirements: tuple[Action, ...]
    on_init: tuple[Action, ...]
    on_finish: tuple[Action, ...]
    on_error: tuple[Action, ...]
    on_resource: Mapping[str, tuple[Action, ...]]
    # on-resource name -> its delta-source-* options (only for those that have any).
    deltas: Mapping[str, DeltaSource] = field(default_factory=dict)


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


# Every option and section name fwup 1.16 knows in a meta.conf (cfgfile.c), and those of
# them that mean nothing when applying. fwup ignores names it does not know (libconfuse's
# CFGF_IGNORE_UNKNOWN: that keeps archives made by a newer fwup installable); a name it
# knows and we do not implement is refused, so nothing is applied half-understood.
FWUP_KNOWN_NAMES = frozenset(
    {
        "meta-product", "meta-description", "meta-version", "meta-author", "meta-platform",
        "meta-architecture", "meta-creation-date", "meta-fwup-version",
        "meta-vcs-identifier", "meta-misc", "meta-uuid", "meta-nickname",
        "require-fwup-version", "block-cache-size-mb", "define", "define!", "define-eval",
        "define-eval!", "include", "file-resource", "mbr", "gpt", "task",
        "uboot-environment", "host-path", "skip-holes", "length", "contents",
        "blake2b-256", "sha256", "assert-size-lte", "assert-size-gte", "block-offset",
        "block-count", "type", "boot", "expand", "os-major", "os-minor",
        "start-block-offset", "ddr-load-address", "entry-point", "image-size-blocks",
        "attribute", "bootstrap-code-host-path", "bootstrap-code", "include-osip",
        "osip-major", "osip-minor", "osip-num-pointers", "signature", "partition", "osii",
        "guid", "name", "flags", "block-offset-redund", "reqlist",
        "require-partition1-offset", "require-unmounted-destination", "verify-on-the-fly",
        "on-init", "on-finish", "on-error", "on-resource", "delta-source-raw-offset",
        "delta-source-raw-count", "delta-source-raw-options", "delta-source-fat-offset",
        "delta-source-fat-path", "funlist",
    }
)  # fmt: skip
_APPLY_IRRELEVANT = frozenset(
    {
        "block-cache-size-mb", "host-path", "contents", "assert-size-lte", "assert-size-gte",
        "bootstrap-code-host-path", "require-unmounted-destination", "verify-on-the-fly",
    }
)  # fmt: skip


def _check_keys(
    section: confuse.Section, allowed: frozenset[str], where: str, strict: bool = False
) -> None:
    """Refuse an option fwup knows that we do not implement; skip one it does not know
    (``strict``: refuse that too, as fwup does in its function-list sections)."""
    for key, _value, _is_list in section.options:
        if key in allowed or key in _APPLY_IRRELEVANT:
            continue
        if strict or key in FWUP_KNOWN_NAMES:
            raise FirmwareError(f"Unsupported option '{key}' in {where} (not implemented here)")


def _unknown_section(name: str, where: str) -> None:
    """A section fwup does not know is skipped, one it knows but we do not is refused."""
    if name in FWUP_KNOWN_NAMES:
        raise FirmwareError(f"Unsupported section '{name}' in {where}")


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


def _actions(
    section: confuse.Section, where: str, options: frozenset[str] = frozenset()
) -> tuple[Action, ...]:
    _check_keys(section, frozenset({"funlist"}) | options, where, strict=True)
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
    _check_keys(
        sec,
        frozenset({"reqlist", "verify-on-the-fly", "require-unsafe", "require-partition1-offset"}),
        where,
    )
    reqs: list[Action] = []
    for key, value, _ in sec.options:
        if key == "reqlist":
            reqs.extend(parse_funlist(value, where))
    legacy = _scalar(sec, "require-partition1-offset")
    if legacy is not None and parse_int(legacy, where) >= 0:
        # The deprecated form of require-partition-offset(1, N), checked first as in fwup.
        reqs.insert(0, Action("require-partition-offset", ("1", legacy)))
    for req in reqs:
        if req.name not in SUPPORTED_REQUIREMENTS:
            raise FirmwareError(f"Unsupported requirement '{req.name}' in {where}")
    on_init: tuple[Action, ...] = ()
    on_finish: tuple[Action, ...] = ()
    on_error: tuple[Action, ...] = ()
    on_resource: dict[str, tuple[Action, ...]] = {}
    deltas: dict[str, DeltaSource] = {}
    for child in sec.children:
        if child.name == "on-init":
            on_init = _actions(child, f"{where} on-init")
        elif child.name == "on-finish":
            on_finish = _actions(child, f"{where} on-finish")
        elif child.name == "on-error":
            on_error = _actions(child, f"{where} on-error")
        elif child.name == "on-resource" and child.title:
            rwhere = f"{where} on-resource '{child.title}'"
            on_resource[child.title] = _actions(child, rwhere, _DELTA_KEYS)
            delta = _delta_source(child, rwhere)
            if delta is not None:
                deltas[child.title] = delta
        else:
            _unknown_section(child.name, where)
    for block in (on_init, on_finish, on_error):
        for action in block:
            if action.name in RESOURCE_ACTIONS:
                raise FirmwareError(f"{action.name} only usable in on-resource")
    return Task(name, tuple(reqs), on_init, on_finish, on_error, on_resource, deltas)


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
        elif key in FWUP_KNOWN_NAMES and key not in _APPLY_IRRELEVANT:
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
            _unknown_section(sec.name, "meta.conf")
    return MetaConf(meta, resources, mbrs, gpts, envs, tuple(tasks), raw=text)


def _file_resource(sec: confuse.Section) -> FileResource:
    where = f"file-resource '{sec.title}'"
    _check_keys(sec, frozenset({"length", "blake2b-256", "skip-holes"}), where)
    # fwup checks the digest (present, 64 characters) only when an action processes
    # the resource, and reads a missing length= as libconfuse's default, 0 (an empty
    # resource: fwup -c writes no length= for one).
    runs = tuple(parse_int(v, f"{where}: length") for v in sec.get("length") or ())
    if any(r < 0 for r in runs):
        raise FirmwareError(f"{where}: negative length")
    digest = _scalar(sec, "blake2b-256") or ""
    data = sum(runs[0::2])
    return FileResource(sec.title or "", data, digest, runs if len(runs) > 1 else ())


_INT32_MAX = 2**31 - 1
_OSII_KEYS = {
    "os-major": "os_major",
    "os-minor": "os_minor",
    "start-block-offset": "start_block_offset",
    "ddr-load-address": "ddr_load_address",
    "entry-point": "entry_point",
    "image-size-blocks": "image_size_blocks",
    "attribute": "attribute",
}


def _mbr(sec: confuse.Section) -> Mbr:
    """An ``mbr`` section, checked as fwup's mbr_cfg_to_partitions / _to_osip do."""
    where = f"mbr '{sec.title}'"
    osip_keys = {"include-osip", "osip-major", "osip-minor", "osip-num-pointers"}
    _check_keys(sec, frozenset({"signature", "bootstrap-code", *osip_keys}), where)
    sig = _scalar(sec, "signature")
    parts: list[MbrPartition] = []
    seen: set[int] = set()
    osii: dict[int, OsipImage] = {}
    for child in sec.children:
        if child.name == "osii":
            _check_keys(child, frozenset(_OSII_KEYS), f"{where} osii {child.title}")
            index = parse_int(child.title or "0", where)
            if not 0 <= index < 15:
                raise FirmwareError(f"{where}: osii must be numbered 0 through 15")
            if index in osii:
                raise FirmwareError(f"{where}: invalid or duplicate osii number found")
            values = {
                field: parse_int(text, where)
                for key, field in _OSII_KEYS.items()
                if (text := _scalar(child, key)) is not None
            }
            osii[index] = OsipImage(**values)
            continue
        if child.name != "partition":
            _unknown_section(child.name, where)
            continue
        pwhere = f"{where} partition {child.title}"
        _check_keys(
            child, frozenset({"block-offset", "block-count", "type", "boot", "expand"}), pwhere
        )
        index = parse_int(child.title or "", pwhere)
        if not 0 <= index < 12:
            raise FirmwareError(f"{where}: partition must be numbered 0 through 11")
        if index in seen:
            raise FirmwareError(f"{where}: invalid or duplicate partition number found for {index}")
        seen.add(index)
        type_ = parse_int(_scalar(child, "type") or "-1", pwhere)
        if not 0 <= type_ <= 0xFF:
            raise FirmwareError(f"{where}: partition {index}'s type must be between 0 and 255")
        offset_text = _scalar(child, "block-offset")
        if not offset_text:
            raise FirmwareError(f"{where}: partition {index}'s block_offset is required")
        offset = parse_int(offset_text, pwhere)
        if not 0 <= offset < 2**32 - 1:
            raise FirmwareError(
                f"{where}: partition {index}'s block_offset must be positive and less than"
                f" 2^32 - 1: '{offset_text}'"
            )
        count_text = _scalar(child, "block-count")
        count = parse_int(count_text, pwhere) if count_text is not None else _INT32_MAX
        if type_ in (0x05, 0x0F):
            if index != 3:
                raise FirmwareError(
                    f"{where}: only partition 3 may be specified as the extended partition"
                )
            boot, expand = False, True
            count = 1 if count >= _INT32_MAX else count
        else:
            boot = _bool(_scalar(child, "boot") or "false", pwhere)
            expand = _bool(_scalar(child, "expand") or "false", pwhere)
            if count >= _INT32_MAX:
                raise FirmwareError(
                    f"{where}: partition {index}'s block-count must be specified and less"
                    " than 2^31 - 1"
                )
        parts.append(MbrPartition(index, offset, count, type_, boot, expand))
    bootstrap = None
    code = _scalar(sec, "bootstrap-code")
    if code is not None:
        try:
            bootstrap = bytes.fromhex(code)
        except ValueError:
            raise FirmwareError(f"{where}: bootstrap-code is not hex") from None
        if len(code) != 880:
            raise FirmwareError(f"{where}: bootstrap-code should be exactly 440 bytes")
    osip = None
    if _bool(_scalar(sec, "include-osip") or "false", where):
        if bootstrap is not None:
            raise FirmwareError(f"{where}: cannot specify OSIP if including bootstrap code")
        if not osii:
            raise FirmwareError(f"{where}: need to specify one or more osii")
        osip = Osip(
            major=parse_int(_scalar(sec, "osip-major") or "1", where),
            minor=parse_int(_scalar(sec, "osip-minor") or "0", where),
            num_pointers=parse_int(_scalar(sec, "osip-num-pointers") or "1", where),
            images=osii,
        )
    signature = parse_int(sig, where) if sig else 0
    return Mbr(sec.title or "", signature, tuple(parts), bootstrap, osip)


def _gpt(sec: confuse.Section) -> GptSection:
    opts = {k: v[0] if len(v) == 1 else ",".join(v) for k, v, _ in sec.options}
    parts = []
    for child in sec.children:
        if child.name != "partition":
            _unknown_section(child.name, f"gpt '{sec.title}'")
            continue
        parts.append(
            (
                child.title or "",
                {k: v[0] if len(v) == 1 else ",".join(v) for k, v, _ in child.options},
            )
        )
    return GptSection(sec.title or "", opts, tuple(parts))


def _uboot_env(sec: confuse.Section) -> UbootEnvironment:
    where = f"uboot-environment '{sec.title}'"
    _check_keys(sec, frozenset({"block-offset", "block-count", "block-offset-redund"}), where)
    off = _scalar(sec, "block-offset")
    count = _scalar(sec, "block-count")
    if off is None or count is None:
        raise FirmwareError(f"{where} needs block-offset and block-count")
    redund_text = _scalar(sec, "block-offset-redund")
    redund: int | None = None
    if redund_text is not None:
        # fwup uses a redundant environment only when this parses as a number
        # (and does not check the overlap when applying).
        try:
            redund = parse_int(redund_text, where)
        except FirmwareError:
            redund = None
    return UbootEnvironment(sec.title or "", parse_int(off, where), parse_int(count, where), redund)
