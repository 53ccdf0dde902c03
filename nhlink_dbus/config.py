"""The daemon's configuration: one TOML file (DESIGN §5), parsed into frozen dataclasses.

:func:`load_config` reads ``/etc/nhlink/nhlink.toml`` (or any path) with
``tomllib`` and returns a :class:`Config`, or raises :class:`ConfigError`
whose message is one line naming the file, the key and the problem::

    /etc/nhlink/nhlink.toml: firmware.applier: must be one of auto, fwup, builtin (got 'x')

Rules (documented for users in ``docs/nhlink.toml.5.md``):

* every key has a type, a default or is required; wrong types, out-of-range
  values and **unknown keys** are refused by name (a typo must not be ignored);
* each default is written once, on its dataclass field, and so is each integer
  range (:func:`nhlink_dbus.core.bounds.bounded`); the readers below take both
  from there, and ``[download]`` is :class:`RetryPolicy`'s own fields and checks;
* file paths must be absolute;
* without a ``[hub]`` table the daemon is *not configured*: it runs, answers
  on the bus and connects nowhere (``Config.hub`` is None; the file installed
  by the Debian package is such a file, see :data:`NOT_CONFIGURED`);
* ``[hub]`` needs exactly one of ``[hub.shared_secret]`` (NH1) and
  ``[hub.tls]`` (mutual TLS); the shared secret comes from exactly one of
  ``secret_file`` (preferred: the file can be 0600 while this one is 0644) and
  ``secret``; ``secret_file`` and the TLS files are read at load time so that a
  missing credential stops start-up, not the first connection;
* fwup public keys must be base64 of 32 bytes (Ed25519).

Builders turn sections into the settings objects other modules take:
:meth:`Config.hub_settings` and :meth:`Config.retry_policy`.

:func:`exposure_warnings` names the files that others can read although they
hold a secret (the NH1 secret, the device key, this file when a secret is
inline) or that others can change (any of those, and this file: it names the
hub and the firmware keys); the daemon logs each at start-up.
"""

from __future__ import annotations

import base64
import binascii
import errno
import grp
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, cast

from nhlink_dbus.core.bounds import (
    Bounds,
    bounded,
    bounded_fields,
    bounds_of,
    default_of,
    int_text,
    same_as,
)
from nhlink_dbus.core.device_api import DeviceApiSettings
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.core.extensions import IMPLEMENTED
from nhlink_dbus.core.hub_settings import HubSettings, SharedSecretAuth, TlsAuth, hub_url_problem
from nhlink_dbus.core.kv_format import parse_kv_spec
from nhlink_dbus.core.link import LinkSettings
from nhlink_dbus.core.media import folder_problem
from nhlink_dbus.core.nh1 import NH1Params
from nhlink_dbus.core.records import dataclass, field
from nhlink_dbus.core.recovery import JOURNAL_FILE
from nhlink_dbus.core.validation import POLICIES as VALIDATION_POLICIES
from nhlink_dbus.errors import ConfigError

DEFAULT_PATH: Final = "/etc/nhlink/nhlink.toml"
DEFAULT_ARCHIVES_DIR: Final = "/var/lib/nhlink/archives"
DEFAULT_STATE_DIR: Final = "/var/lib/nhlink"
DEFAULT_MEDIA_MOUNT_DIR: Final = "/run/nhlink/media"
# Byte counts (archive folder, files on media): up to 2**62, far beyond any disk.
MAX_BYTES: Final = 2**62
# LastError (and the log) of a daemon whose file has no [hub] table.
NOT_CONFIGURED: Final = "not configured: {source} has no [hub] table, so no hub is contacted"

ApplierKind = Literal["auto", "fwup", "builtin"]
VALIDATE_POLICIES: Final = VALIDATION_POLICIES
IMPLEMENTED_EXTENSIONS: Final = tuple(IMPLEMENTED)
UpdateDefault = Literal["apply", "ignore"]
ArchiveDefault = Literal["download", "ignore"]

APPLIERS: Final = ("auto", "fwup", "builtin")
UPDATE_DEFAULTS: Final = ("apply", "ignore")
ARCHIVE_DEFAULTS: Final = ("download", "ignore")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
# Names valid both for Python's hashlib and Erlang's :crypto (the server).
NH1_DIGESTS: Final = ("sha256", "sha384", "sha512")
ED25519_KEY_BYTES: Final = 32

# [hub.shared_secret] key_iterations and key_length: ranges of core.nh1.NH1Params's fields.
_NH1_BOUNDS: Final = MappingProxyType(
    {"iterations": Bounds(1, 10_000_000), "length": Bounds(16, 1024)}
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_DESKTOP_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class HubConfig:
    """``[hub]``: where the hub is and how this device authenticates."""

    url: str
    identifier: str | None
    auth: SharedSecretAuth | TlsAuth
    # Defaults from the core's HubSettings; a file may not ask for heartbeats
    # closer than 100 ms (HubSettings takes any non-negative value).
    heartbeat_interval_ms: int = bounded(default_of(HubSettings, "heartbeat_interval_ms"), 100)
    rejoin_after_ms: int = same_as(HubSettings, "rejoin_after_ms")
    # Server verification for NH1 over wss:// (with [hub.tls] they live there).
    cafile: str | None = None
    sni: str | None = None
    secret_file: str | None = None  # where [hub.shared_secret] read the secret from


@dataclass(frozen=True, slots=True)
class FirmwareConfig:
    """``[firmware]``: the running firmware's KV store and how updates are applied."""

    kv: str
    devpath: str | None = None
    task: str = "upgrade"
    applier: ApplierKind = "auto"
    fwup_path: str | None = None
    public_keys: tuple[str, ...] = ()
    fwup_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Firmware validation (core/validation.py); defaults are DeviceApiSettings's.
    validate: str = default_of(DeviceApiSettings, "validate")
    validate_after_ms: int = same_as(DeviceApiSettings, "validate_after_ms")


@dataclass(frozen=True, slots=True)
class ExtensionsConfig:
    """``[extensions]``: which NervesHub extensions the device offers."""

    offer: tuple[str, ...] = default_of(DeviceApiSettings, "extensions")


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """``[health]``: what the health report measures."""

    disk_path: str = "/"


@dataclass(frozen=True, slots=True)
class GeoConfig:
    """``[geo]``: where the geo extension's answer comes from."""

    geoclue: bool = True
    geoclue_timeout_ms: int = bounded(10_000, 100, 600_000)
    desktop_id: str = "nhlink-dbus"
    latitude: float | None = None  # a fixed location, used without GeoClue2
    longitude: float | None = None
    accuracy_m: float | None = None


@dataclass(frozen=True, slots=True)
class ArchivesConfig:
    """``[archives]``: where verified archives go, their signing keys, the folder's bounds."""

    dir: str = DEFAULT_ARCHIVES_DIR
    public_keys: tuple[str, ...] = ()
    max_bytes: int = bounded(4 << 30, 1, MAX_BYTES)
    max_count: int = bounded(16, 1, 100_000)
    keep_ready_ms: int = bounded(86_400_000, 0)


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """``[media]``: removable media watched through udev (core/media.py has the rules)."""

    enabled: bool = True
    mount: bool = True
    mount_dir: str = DEFAULT_MEDIA_MOUNT_DIR
    folders: tuple[str, ...] = ("nerves-hub", ".")
    max_bytes: int = bounded(4 << 30, 1, MAX_BYTES)


@dataclass(frozen=True, slots=True)
class DecisionsConfig:
    """``[decisions]``: DESIGN §3 (timeouts, defaults, who may decide)."""

    timeout_ms: int = bounded(30_000, 0)
    default_update: UpdateDefault = "apply"
    default_archive: ArchiveDefault = "ignore"
    ignore_same_uuid: bool = True
    group: str = "nhlink"


@dataclass(frozen=True, slots=True)
class RebootConfig:
    """``[reboot]``: the delay, logind retries, and the fallback command."""

    delay_ms: int = bounded(5_000, 0)
    retries: int = bounded(3, 0, 100)
    retry_delay_ms: int = bounded(1_000, 0)
    command: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """``[service]``: what the service keeps for itself across restarts."""

    state_dir: str = DEFAULT_STATE_DIR  # the update journal (core/recovery.py)
    boot_id_file: str = "/proc/sys/kernel/random/boot_id"

    @property
    def journal_path(self) -> str:
        return os.path.join(self.state_dir, JOURNAL_FILE)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """``[logging]``."""

    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file. ``source`` is the path it was read from."""

    source: str
    hub: HubConfig | None  # None: no [hub] table, not configured (connects nowhere)
    firmware: FirmwareConfig
    archives: ArchivesConfig = ArchivesConfig()
    decisions: DecisionsConfig = DecisionsConfig()
    reboot: RebootConfig = RebootConfig()
    download: RetryPolicy = field(default_factory=RetryPolicy)  # [download]: protocol.md §6.4
    logging: LoggingConfig = LoggingConfig()
    extensions: ExtensionsConfig = ExtensionsConfig()
    health: HealthConfig = HealthConfig()
    geo: GeoConfig = GeoConfig()
    service: ServiceConfig = ServiceConfig()
    media: MediaConfig = MediaConfig()

    def hub_settings(self, identifier: str | None = None) -> HubSettings:
        """The hub client's settings.

        ``hub.identifier`` wins; ``identifier`` is the fallback the caller found
        (the KV store's serial number). Raises :class:`ConfigError` with neither,
        or when there is no ``[hub]`` table (see :meth:`not_configured`).
        """
        if self.hub is None:
            raise ConfigError(self.not_configured() or "")
        chosen = self.hub.identifier or identifier
        if not chosen:
            raise ConfigError(
                f"{self.source}: hub.identifier: not set, and no serial number was found"
            )
        return HubSettings(
            url=self.hub.url,
            identifier=chosen,
            auth=self.hub.auth,
            heartbeat_interval_ms=self.hub.heartbeat_interval_ms,
            rejoin_after_ms=self.hub.rejoin_after_ms,
            cafile=self.hub.cafile,
            sni=self.hub.sni,
        )

    def not_configured(self) -> str | None:
        """Why no hub is contacted (the file has no ``[hub]`` table), else None."""
        return NOT_CONFIGURED.format(source=self.source) if self.hub is None else None

    def retry_policy(self) -> RetryPolicy:
        """The downloader's retry policy (``[download]``)."""
        return self.download

    def link_settings(self) -> LinkSettings:
        """What the service's core needs: decisions, reboot delay, configured keys."""
        return LinkSettings(
            decision_timeout_ms=self.decisions.timeout_ms,
            default_update=self.decisions.default_update,
            default_archive=self.decisions.default_archive,
            ignore_same_uuid=self.decisions.ignore_same_uuid,
            reboot_delay_ms=self.reboot.delay_ms,
            fwup_keys=tuple(self.firmware.public_keys),
            archive_keys=tuple(self.archives.public_keys),
        )

    def device_api_settings(self) -> DeviceApiSettings:
        """Validation policy and offered extensions (core/device_api.py)."""
        return DeviceApiSettings(
            validate=self.firmware.validate,
            validate_after_ms=self.firmware.validate_after_ms,
            extensions=self.extensions.offer,
        )


# --- loading ------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str] = DEFAULT_PATH) -> Config:
    """Read and validate the file at ``path``; raises :class:`ConfigError`."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            data = fh.read()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source}: cannot read: {_os_problem(exc)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{source}: line {line}: not UTF-8 text") from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate TOML ``text``; ``source`` names it in error messages."""
    try:
        document = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, and int() limits inside tomllib
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid TOML: nested too deeply") from None
    root = _Table(source, "", document)
    hub_table = root.optional_table("hub")
    hub = _hub(hub_table) if hub_table is not None else None
    firmware = _firmware(root.table("firmware"))
    archives = _archives(root.table("archives"))
    decisions = _decisions(root.table("decisions"))
    reboot = _reboot(root.table("reboot"))
    download = _download(root.table("download"))
    logging_ = _logging(root.table("logging"))
    extensions = _extensions(root.table("extensions"))
    health = _health(root.table("health"))
    geo = _geo(root.table("geo"))
    service = _service(root.table("service"))
    media = _media(root.table("media"))
    root.finish()
    return Config(
        source,
        hub,
        firmware,
        archives,
        decisions,
        reboot,
        download,
        logging_,
        extensions=extensions,
        health=health,
        geo=geo,
        service=service,
        media=media,
    )


def _hub(t: _Table) -> HubConfig:
    url = _hub_url(t, "url")
    identifier = t.optional_string("identifier")
    if identifier is not None and (not identifier.strip() or _has_control(identifier)):
        raise t.error("identifier", "must be a non-empty string without control characters")
    heartbeat = t.bounded(HubConfig, "heartbeat_interval_ms")
    rejoin = t.bounded(HubConfig, "rejoin_after_ms")
    cafile = t.readable_file("cafile")
    sni = t.optional_string("sni", nonempty=True)
    shared = t.optional_table("shared_secret")
    tls = t.optional_table("tls")
    auth: SharedSecretAuth | TlsAuth
    if shared is not None and tls is not None:
        raise t.error("", "[hub.shared_secret] and [hub.tls] exclude each other: keep one")
    if shared is not None:
        auth = _shared_secret(shared)
    elif tls is not None:
        if cafile is not None or sni is not None:
            key = "cafile" if cafile is not None else "sni"
            raise t.error(key, f"with [hub.tls], set hub.tls.{key} instead")
        auth = _tls(tls)
    else:
        raise t.error("", "needs [hub.shared_secret] (NH1) or [hub.tls] (mutual TLS)")
    secret_file = shared.data.get("secret_file") if shared is not None else None
    t.finish()
    return HubConfig(url, identifier, auth, heartbeat, rejoin, cafile, sni, secret_file)


def _hub_url(t: _Table, key: str) -> str:
    url = t.required_string(key)
    problem = hub_url_problem(url)
    if problem is not None:
        raise t.error(key, problem)
    return url


def _shared_secret(t: _Table) -> SharedSecretAuth:
    key = t.required_string("key")
    if not key.startswith(("nhd_", "nhp_")) or _has_control(key):
        raise t.error("key", "must be a device key (nhd_...) or a product key (nhp_...)")
    has_file, has_inline = t.has("secret_file"), t.has("secret")
    if has_file and has_inline:
        raise t.error("secret", "set secret_file or secret, not both")
    if has_file:
        secret = t.secret_from_file("secret_file")
    elif has_inline:
        secret = t.required_string("secret", secret=True)
        if secret != secret.strip() or _has_control(secret):
            raise t.error("secret", "must not contain whitespace or control characters")
    else:
        raise t.error("secret_file", "missing (or give the secret inline with secret)")
    params = NH1Params(
        digest=t.choice("key_digest", default_of(NH1Params, "digest"), NH1_DIGESTS),
        iterations=t.integer(
            "key_iterations", default_of(NH1Params, "iterations"), _NH1_BOUNDS["iterations"]
        ),
        length=t.integer("key_length", default_of(NH1Params, "length"), _NH1_BOUNDS["length"]),
    )
    t.finish()
    return SharedSecretAuth(key, secret, params)


def _tls(t: _Table) -> TlsAuth:
    certfile = t.readable_file("certfile", required=True)
    keyfile = t.readable_file("keyfile", required=True)
    assert certfile is not None and keyfile is not None
    auth = TlsAuth(
        certfile=certfile,
        keyfile=keyfile,
        cafile=t.readable_file("cafile"),
        sni=t.optional_string("sni", nonempty=True),
    )
    t.finish()
    return auth


def _firmware(t: _Table) -> FirmwareConfig:
    kv = t.required_string("kv")
    try:
        kind, kv_path, _offset, _size = parse_kv_spec(kv)
    except ConfigError as exc:
        raise t.error("kv", str(exc)) from None
    if not os.path.isabs(kv_path) or "\0" in kv_path:
        raise t.error("kv", f"the {kind} path must be absolute (got {kv_path!r})")
    devpath = t.path("devpath")
    task = t.string("task", default_of(FirmwareConfig, "task"))
    if _has_control(task):
        raise t.error("task", "must not contain control characters")
    applier = cast(
        ApplierKind, t.choice("applier", default_of(FirmwareConfig, "applier"), APPLIERS)
    )
    fwup_path = t.path("fwup_path")
    public_keys = t.public_keys("public_keys")
    fwup_env = t.environment("fwup_env")
    validate = t.choice("validate", default_of(FirmwareConfig, "validate"), VALIDATE_POLICIES)
    validate_after_ms = t.bounded(FirmwareConfig, "validate_after_ms")
    t.finish()
    return FirmwareConfig(
        kv,
        devpath,
        task,
        applier,
        fwup_path,
        public_keys,
        fwup_env,
        validate,
        validate_after_ms,
    )


def _archives(t: _Table) -> ArchivesConfig:
    config = ArchivesConfig(
        dir=t.path("dir") or default_of(ArchivesConfig, "dir"),
        public_keys=t.public_keys("public_keys"),
        max_bytes=t.bounded(ArchivesConfig, "max_bytes"),
        max_count=t.bounded(ArchivesConfig, "max_count"),
        keep_ready_ms=t.bounded(ArchivesConfig, "keep_ready_ms"),
    )
    t.finish()
    return config


def _media(t: _Table) -> MediaConfig:
    def default(key: str) -> Any:
        return default_of(MediaConfig, key)

    folders = t.strings("folders")
    if folders is not None:
        if not folders:
            raise t.error("folders", 'must name at least one folder (e.g. ["."])')
        for index, folder in enumerate(folders):
            problem = folder_problem(folder)
            if problem is not None:
                raise t.error("folders", f"item {index} ({folder!r}) {problem}")
    config = MediaConfig(
        enabled=t.boolean("enabled", default("enabled")),
        mount=t.boolean("mount", default("mount")),
        mount_dir=t.path("mount_dir") or default("mount_dir"),
        folders=tuple(folders) if folders is not None else default("folders"),
        max_bytes=t.bounded(MediaConfig, "max_bytes"),
    )
    t.finish()
    return config


def _decisions(t: _Table) -> DecisionsConfig:
    def default(key: str) -> Any:
        return default_of(DecisionsConfig, key)

    timeout = t.bounded(DecisionsConfig, "timeout_ms")
    default_update = cast(
        UpdateDefault, t.choice("default_update", default("default_update"), UPDATE_DEFAULTS)
    )
    default_archive = cast(
        ArchiveDefault, t.choice("default_archive", default("default_archive"), ARCHIVE_DEFAULTS)
    )
    ignore_same_uuid = t.boolean("ignore_same_uuid", default("ignore_same_uuid"))
    group = t.string("group", default("group"))
    if not _GROUP_NAME.fullmatch(group):
        raise t.error("group", f"not a valid group name ({group!r})")
    t.finish()
    return DecisionsConfig(timeout, default_update, default_archive, ignore_same_uuid, group)


def _reboot(t: _Table) -> RebootConfig:
    config = RebootConfig(
        delay_ms=t.bounded(RebootConfig, "delay_ms"),
        retries=t.bounded(RebootConfig, "retries"),
        retry_delay_ms=t.bounded(RebootConfig, "retry_delay_ms"),
        command=t.command("command"),
    )
    t.finish()
    return config


def _download(t: _Table) -> RetryPolicy:
    # RetryPolicy holds the defaults and ranges (and checks them itself).
    config = RetryPolicy(
        **{key: t.bounded(RetryPolicy, key) for key in bounded_fields(RetryPolicy)}
    )
    t.finish()
    return config


def _extensions(t: _Table) -> ExtensionsConfig:
    offer = t.strings("offer")
    if offer is None:
        offer = default_of(ExtensionsConfig, "offer")
    for name in offer:
        if name not in IMPLEMENTED_EXTENSIONS:
            known = ", ".join(IMPLEMENTED_EXTENSIONS)
            raise t.error("offer", f"unknown extension {name!r} (this device offers {known})")
    if len(set(offer)) != len(offer):
        raise t.error("offer", "names an extension twice")
    t.finish()
    return ExtensionsConfig(tuple(offer))


def _service(t: _Table) -> ServiceConfig:
    config = ServiceConfig(
        state_dir=t.path("state_dir") or default_of(ServiceConfig, "state_dir"),
        boot_id_file=t.path("boot_id_file") or default_of(ServiceConfig, "boot_id_file"),
    )
    t.finish()
    return config


def _health(t: _Table) -> HealthConfig:
    config = HealthConfig(disk_path=t.path("disk_path") or default_of(HealthConfig, "disk_path"))
    t.finish()
    return config


def _geo(t: _Table) -> GeoConfig:
    geoclue = t.boolean("geoclue", default_of(GeoConfig, "geoclue"))
    timeout = t.bounded(GeoConfig, "geoclue_timeout_ms")
    desktop_id = t.string("desktop_id", default_of(GeoConfig, "desktop_id"))
    if not _DESKTOP_ID.fullmatch(desktop_id):
        raise t.error("desktop_id", f"not a valid desktop id ({desktop_id!r})")
    latitude = t.number("latitude", -90.0, 90.0)
    longitude = t.number("longitude", -180.0, 180.0)
    accuracy = t.number("accuracy_m", 0.0, 40_075_000.0)
    if (latitude is None) != (longitude is None):
        raise t.error("latitude" if latitude is None else "longitude", "set both or neither")
    if accuracy is not None and latitude is None:
        raise t.error("accuracy_m", "only with latitude and longitude")
    t.finish()
    return GeoConfig(geoclue, timeout, desktop_id, latitude, longitude, accuracy)


def _logging(t: _Table) -> LoggingConfig:
    level = t.string("level", default_of(LoggingConfig, "level")).lower()
    if level not in LOG_LEVELS:
        raise t.error("level", f"must be one of {', '.join(LOG_LEVELS)} (got {level!r})")
    t.finish()
    return LoggingConfig(level)


# --- files others can read or change ------------------------------------------------------


def exposure_warnings(config: Config) -> list[str]:
    """One line per file that others can read although it holds a secret, or that
    others can change (module docstring). Files that cannot be examined are skipped:
    loading the configuration read them already."""
    secret_holders: list[tuple[str, str]] = []
    hub = config.hub
    if hub is None:
        pass  # not configured: no secret of the hub's anywhere
    elif isinstance(hub.auth, SharedSecretAuth):
        if hub.secret_file is not None:
            secret_holders.append((hub.secret_file, "holds the NH1 shared secret"))
        else:
            secret_holders.append((config.source, "holds the NH1 shared secret inline"))
    else:
        secret_holders.append((hub.auth.keyfile, "holds the device's private key"))
    if config.firmware.fwup_env and config.source not in dict(secret_holders):
        secret_holders.append((config.source, "holds firmware.fwup_env"))
    warnings: list[str] = []
    for path, what in secret_holders:
        readers = _others_who_can(path, stat.S_IRGRP, stat.S_IROTH)
        if readers:
            fix = f"chmod 600 {path}"
            if what.endswith("inline"):
                fix += " (or move the secret to hub.shared_secret.secret_file)"
            warnings.append(f"{path} {what} and is readable by {readers}: {fix}")
    for path in dict.fromkeys([config.source, *(p for p, _ in secret_holders)]):
        writers = _others_who_can(path, stat.S_IWGRP, stat.S_IWOTH)
        if writers:
            warnings.append(
                f"{path} can be changed by {writers} (it decides which hub and which "
                f"firmware this device trusts): chmod go-w {path}"
            )
    return warnings


def _others_who_can(path: str, group_bit: int, other_bit: int) -> str | None:
    """Who besides the owner (and root's group) has the permission: None if nobody."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_mode & other_bit:
        return "every user"
    if st.st_mode & group_bit and st.st_gid != 0:
        try:
            name = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            name = str(st.st_gid)
        return f"group {name}"
    return None


# --- the typed reader ---------------------------------------------------------------------

_MISSING: Final[Any] = object()


class _Table:
    """One TOML table being read: typed getters that remember which keys were used.

    Every problem becomes ``ConfigError("SOURCE: dotted.key: problem")``;
    :meth:`finish` refuses the keys nobody asked for.
    """

    def __init__(self, source: str, prefix: str, data: Mapping[str, Any]) -> None:
        self.source = source
        self.prefix = prefix
        self.data = data
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        name = f"{self.prefix}.{key}" if self.prefix and key else (key or self.prefix)
        return ConfigError(f"{self.source}: {name}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key, _MISSING)

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                import difflib  # noqa: PLC0415  (only for a mistaken key)

                hint = difflib.get_close_matches(key, sorted(self.used), n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                what = "table" if isinstance(self.data[key], dict) else "key"
                raise self.error(key, f"unknown {what}{did_you_mean}")

    # tables

    def table(self, key: str) -> _Table:
        """The sub-table ``key``; an absent one reads as empty."""
        return self.optional_table(key) or _Table(self.source, self._dotted(key), {})

    def optional_table(self, key: str) -> _Table | None:
        value = self._get(key)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table (got {_type_name(value)})")
        return _Table(self.source, self._dotted(key), value)

    def _dotted(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    # scalars

    def _typed(self, key: str, kind: type, kind_name: str, *, secret: bool = False) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return value
        # bool is an int subclass: true must not pass for 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            got = _type_name(value) if secret else _describe(value)
            raise self.error(key, f"must be {kind_name} (got {got})")
        return value

    def optional_string(
        self, key: str, *, nonempty: bool = False, secret: bool = False
    ) -> str | None:
        value = self._typed(key, str, "a string", secret=secret)
        if value is _MISSING:
            return None
        if nonempty and not value:
            raise self.error(key, "must not be empty")
        if "\0" in value:
            raise self.error(key, "must not contain NUL characters")
        assert isinstance(value, str)
        return value

    def required_string(self, key: str, *, secret: bool = False) -> str:
        value = self.optional_string(key, nonempty=True, secret=secret)
        if value is None:
            raise self.error(key, "missing (required)")
        return value

    def string(self, key: str, default: str) -> str:
        value = self.optional_string(key, nonempty=True)
        return default if value is None else value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def integer(self, key: str, default: int, bounds: Bounds) -> int:
        value = self._typed(key, int, "an integer")
        if value is _MISSING:
            return default
        problem = bounds.problem(value)
        if problem is not None:
            raise self.error(key, problem)
        assert isinstance(value, int)
        return value

    def bounded(self, cls: type, key: str) -> int:
        """Integer ``key``, default and range from the bounded field ``key`` of ``cls``."""
        return self.integer(key, default_of(cls, key), bounds_of(cls, key))

    def number(self, key: str, minimum: float, maximum: float) -> float | None:
        """An optional integer or float in ``minimum..maximum``."""
        value = self._get(key)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number (got {_describe(value)})")
        number = float(value)
        if not math.isfinite(number) or not minimum <= number <= maximum:
            raise self.error(key, f"must be between {minimum:g} and {maximum:g} (got {value!r})")
        return number

    def boolean(self, key: str, default: bool) -> bool:
        value = self._typed(key, bool, "true or false")
        if value is _MISSING:
            return default
        assert isinstance(value, bool)
        return value

    # arrays and tables of strings

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self._typed(key, list, "an array of strings")
        if value is _MISSING:
            return None
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(key, f"item {index} must be a string (got {_describe(item)})")
            if "\0" in item:
                raise self.error(key, f"item {index} must not contain NUL characters")
        return tuple(value)

    def public_keys(self, key: str) -> tuple[str, ...]:
        keys = self.strings(key) or ()
        for index, text in enumerate(keys):
            try:
                raw = base64.b64decode(text.strip(), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != ED25519_KEY_BYTES:
                raise self.error(
                    key, f"item {index} is not a base64 Ed25519 public key (32 bytes): {text!r}"
                )
        return tuple(text.strip() for text in keys)

    def command(self, key: str) -> tuple[str, ...] | None:
        argv = self.strings(key)
        if argv is not None and (not argv or not argv[0]):
            raise self.error(key, 'must name a program, e.g. ["systemctl", "reboot"]')
        return argv

    def environment(self, key: str) -> Mapping[str, str]:
        value = self._get(key)
        if value is _MISSING:
            return MappingProxyType({})
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table of strings (got {_type_name(value)})")
        env: dict[str, str] = {}
        for name, item in value.items():
            if not _ENV_NAME.fullmatch(name):
                raise self.error(key, f"{name!r} is not a valid environment variable name")
            if not isinstance(item, str) or "\0" in item:
                raise self.error(f"{key}.{name}", f"must be a string (got {_describe(item)})")
            env[name] = item
        return MappingProxyType(env)

    # files

    def path(self, key: str) -> str | None:
        value = self.optional_string(key, nonempty=True)
        if value is not None and not os.path.isabs(value):
            raise self.error(key, f"must be an absolute path (got {value!r})")
        return value

    def readable_file(self, key: str, *, required: bool = False) -> str | None:
        value = self.path(key)
        if value is None:
            if required:
                raise self.error(key, "missing (required)")
            return None
        try:
            os.close(_open_regular_file(value))
        except OSError as exc:
            raise self.error(key, f"cannot read {value}: {_os_problem(exc)}") from None
        return value

    def secret_from_file(self, key: str) -> str:
        value = self.path(key)
        assert value is not None
        try:
            with open(_open_regular_file(value), "rb") as fh:
                data = fh.read(65_536)
        except OSError as exc:
            raise self.error(key, f"cannot read {value}: {_os_problem(exc)}") from None
        try:
            secret = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self.error(key, f"{value} is not UTF-8 text") from None
        if not secret or _has_control(secret) or any(c.isspace() for c in secret):
            raise self.error(key, f"{value} must hold the secret alone on one line")
        return secret


def _open_regular_file(path: str) -> int:
    """An fd for reading ``path``; a FIFO or device would block or mislead: refuse."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd


def _type_name(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a float"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "a table"
        case _:
            return "a date/time"


def _describe(value: object) -> str:
    """Type and a short rendering of a wrong value (never used for secrets)."""
    if isinstance(value, list | dict):
        return _type_name(value)
    text = int_text(value) if isinstance(value, int) else repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{_type_name(value)} {text}"


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _os_problem(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
