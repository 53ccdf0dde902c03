"""nhlink_dbus.config: every key, every error form, the shipped example and man page."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nhlink_dbus.config import Config, load_config, parse_config
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.core.hub_settings import SharedSecretAuth, TlsAuth, websocket_url
from nhlink_dbus.core.nh1 import NH1Params
from nhlink_dbus.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nhlink.toml"
MAN_PAGE = REPO / "docs" / "nhlink.toml.5.md"

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(32, 64))).decode()
SRC = "/etc/nhlink/nhlink.toml"

# The schema: every key the file may hold, by table. A key missing here is
# refused by the parser (test_every_key_is_known_and_nothing_else).
SCHEMA: dict[str, set[str]] = {
    "hub": {"url", "identifier", "heartbeat_interval_ms", "rejoin_after_ms", "cafile", "sni"},
    "hub.shared_secret": {
        "key",
        "secret",
        "secret_file",
        "key_digest",
        "key_iterations",
        "key_length",
    },
    "hub.tls": {"certfile", "keyfile", "cafile", "sni"},
    "firmware": {
        "kv",
        "devpath",
        "task",
        "applier",
        "fwup_path",
        "public_keys",
        "fwup_env",
        "validate",
        "validate_after_ms",
    },
    "archives": {"dir", "public_keys", "max_bytes", "max_count", "keep_ready_ms"},
    "decisions": {
        "timeout_ms",
        "default_update",
        "default_archive",
        "ignore_same_uuid",
        "group",
    },
    "reboot": {"delay_ms", "retries", "retry_delay_ms", "command"},
    "download": {
        "max_disconnects",
        "idle_timeout_ms",
        "time_between_retries_ms",
        "max_timeout_ms",
        "worst_case_download_speed_bps",
        "max_redirects",
    },
    "logging": {"level"},
    "extensions": {"offer"},
    "health": {"disk_path"},
    "geo": {"geoclue", "geoclue_timeout_ms", "desktop_id", "latitude", "longitude", "accuracy_m"},
    "service": {"state_dir", "boot_id_file"},
    "media": {"enabled", "mount", "mount_dir", "folders", "max_bytes"},
}

MINIMAL = """
[hub]
url = "wss://devices.example.com"
[hub.shared_secret]
key = "nhd_key"
secret = "s3cret"
[firmware]
kv = "file:/var/lib/nhlink/kv.env"
"""


def parse(text: str) -> Config:
    return parse_config(text, SRC)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def creds(tmp_path: Path) -> dict[str, str]:
    files = {
        "secret": "file-secret\n",
        "cert": "-----BEGIN CERTIFICATE-----\n",
        "key": "-----BEGIN PRIVATE KEY-----\n",
        "ca": "-----BEGIN CERTIFICATE-----\n",
    }
    paths = {}
    for name, content in files.items():
        path = tmp_path / f"{name}.pem"
        path.write_text(content)
        paths[name] = str(path)
    return paths


def full_nh1(creds: dict[str, str]) -> str:
    """Every [hub]/[hub.shared_secret] key and every other table's, none at its default."""
    return f"""
[hub]
url = "wss://hub.example.com:4001/ignored?x=1"
identifier = "kiosk-7"
heartbeat_interval_ms = 1000
rejoin_after_ms = 0
cafile = "{creds["ca"]}"
sni = "hub.internal"

[hub.shared_secret]
key = "nhp_product"
secret_file = "{creds["secret"]}"
key_digest = "sha512"
key_iterations = 2000
key_length = 64

[firmware]
kv = "uboot-env:/dev/mmcblk0:0x100000:0x2000"
devpath = "/dev/mmcblk1"
task = "complete"
applier = "builtin"
fwup_path = "/opt/fwup/bin/fwup"
public_keys = ["{KEY_A}", " {KEY_B} "]
fwup_env = {{ A_B = "1", PATH = "/bin" }}
validate = "on-connect"
validate_after_ms = 60000

[archives]
dir = "/data/archives"
public_keys = ["{KEY_B}"]
max_bytes = 1000000
max_count = 3
keep_ready_ms = 60000

[decisions]
timeout_ms = 0
default_update = "ignore"
default_archive = "download"
ignore_same_uuid = false
group = "kiosk-admins"

[reboot]
delay_ms = 0
retries = 0
retry_delay_ms = 250
command = ["/usr/bin/systemctl", "reboot", "--force"]

[download]
max_disconnects = 3
idle_timeout_ms = 1000
time_between_retries_ms = 0
max_timeout_ms = 3600000
worst_case_download_speed_bps = 8000000
max_redirects = 0

[logging]
level = "DEBUG"

[extensions]
offer = ["health"]

[health]
disk_path = "/data"

[geo]
geoclue = false
geoclue_timeout_ms = 500
desktop_id = "kiosk.nhlink"
latitude = 52.52
longitude = -13
accuracy_m = 25

[media]
enabled = false
mount = false
mount_dir = "/run/kiosk/media"
folders = ["updates/nerves", "."]
max_bytes = 5000000

[service]
state_dir = "/data/nhlink"
boot_id_file = "/run/fake-boot-id"
"""


def full_tls(creds: dict[str, str]) -> str:
    return f"""
[hub]
url = "devices.example.com"
[hub.tls]
certfile = "{creds["cert"]}"
keyfile = "{creds["key"]}"
cafile = "{creds["ca"]}"
sni = "devices.internal"
[firmware]
kv = "file:/var/lib/nhlink/kv.env"
"""


# --- values -------------------------------------------------------------------------------


def test_minimal_file_gets_every_default() -> None:
    config = parse(MINIMAL)
    assert config.source == SRC
    hub = config.hub
    assert (hub.url, hub.identifier, hub.heartbeat_interval_ms, hub.rejoin_after_ms) == (
        "wss://devices.example.com",
        None,
        30000,
        5000,
    )
    assert (hub.cafile, hub.sni) == (None, None)
    assert hub.auth == SharedSecretAuth("nhd_key", "s3cret", NH1Params("sha256", 1000, 32))
    fw = config.firmware
    assert (fw.kv, fw.devpath, fw.task, fw.applier, fw.fwup_path) == (
        "file:/var/lib/nhlink/kv.env",
        None,
        "upgrade",
        "auto",
        None,
    )
    assert (fw.public_keys, dict(fw.fwup_env)) == ((), {})
    assert (config.archives.dir, config.archives.public_keys) == ("/var/lib/nhlink/archives", ())
    a = config.archives
    assert (a.max_bytes, a.max_count, a.keep_ready_ms) == (4 << 30, 16, 86_400_000)
    m = config.media
    assert (m.enabled, m.mount, m.mount_dir, m.folders, m.max_bytes) == (
        True,
        True,
        "/run/nhlink/media",
        ("nerves-hub", "."),
        4 << 30,
    )
    d = config.decisions
    assert (d.timeout_ms, d.default_update, d.default_archive, d.ignore_same_uuid, d.group) == (
        30000,
        "apply",
        "ignore",
        True,
        "nhlink",
    )
    r = config.reboot
    assert (r.delay_ms, r.retries, r.retry_delay_ms, r.command) == (5000, 3, 1000, None)
    assert config.retry_policy() == RetryPolicy()
    assert config.logging.level == "info"
    assert (config.service.state_dir, config.service.boot_id_file) == (
        "/var/lib/nhlink",
        "/proc/sys/kernel/random/boot_id",
    )
    assert config.service.journal_path == "/var/lib/nhlink/update-journal.json"


def test_every_key_set(creds: dict[str, str]) -> None:
    config = parse(full_nh1(creds))
    hub = config.hub
    assert (hub.url, hub.identifier, hub.heartbeat_interval_ms, hub.rejoin_after_ms) == (
        "wss://hub.example.com:4001/ignored?x=1",
        "kiosk-7",
        1000,
        0,
    )
    assert (hub.cafile, hub.sni) == (creds["ca"], "hub.internal")
    assert hub.auth == SharedSecretAuth("nhp_product", "file-secret", NH1Params("sha512", 2000, 64))
    fw = config.firmware
    assert (fw.kv, fw.devpath, fw.task, fw.applier, fw.fwup_path) == (
        "uboot-env:/dev/mmcblk0:0x100000:0x2000",
        "/dev/mmcblk1",
        "complete",
        "builtin",
        "/opt/fwup/bin/fwup",
    )
    assert fw.public_keys == (KEY_A, KEY_B)
    assert dict(fw.fwup_env) == {"A_B": "1", "PATH": "/bin"}
    assert (config.archives.dir, config.archives.public_keys) == ("/data/archives", (KEY_B,))
    a = config.archives
    assert (a.max_bytes, a.max_count, a.keep_ready_ms) == (1_000_000, 3, 60_000)
    m = config.media
    assert (m.enabled, m.mount, m.mount_dir, m.folders, m.max_bytes) == (
        False,
        False,
        "/run/kiosk/media",
        ("updates/nerves", "."),
        5_000_000,
    )
    d = config.decisions
    assert (d.timeout_ms, d.default_update, d.default_archive, d.ignore_same_uuid, d.group) == (
        0,
        "ignore",
        "download",
        False,
        "kiosk-admins",
    )
    r = config.reboot
    assert (r.delay_ms, r.retries, r.retry_delay_ms) == (0, 0, 250)
    assert r.command == ("/usr/bin/systemctl", "reboot", "--force")
    assert config.retry_policy() == RetryPolicy(
        max_disconnects=3,
        idle_timeout_ms=1000,
        time_between_retries_ms=0,
        max_timeout_ms=3_600_000,
        worst_case_download_speed_bps=8_000_000,
        max_redirects=0,
    )
    assert config.logging.level == "debug"
    assert (config.service.state_dir, config.service.boot_id_file) == (
        "/data/nhlink",
        "/run/fake-boot-id",
    )


def test_secrets_stay_out_of_repr(creds: dict[str, str]) -> None:
    assert "file-secret" not in repr(parse(full_nh1(creds)))
    assert "s3cret" not in repr(parse(MINIMAL))


def test_config_is_frozen() -> None:
    config = parse(MINIMAL)
    with pytest.raises(AttributeError):
        config.hub = config.hub  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.firmware.fwup_env["X"] = "y"  # type: ignore[index]


def test_hub_settings_nh1(creds: dict[str, str]) -> None:
    settings_ = parse(full_nh1(creds)).hub_settings()
    assert settings_.identifier == "kiosk-7"
    assert settings_.heartbeat_interval_ms == 1000
    assert (settings_.server_cafile, settings_.server_sni) == (creds["ca"], "hub.internal")
    assert websocket_url(settings_) == (
        "wss://hub.example.com:4001/device-socket/websocket?x=1&vsn=2.0.0"
    )


def test_hub_settings_tls(creds: dict[str, str]) -> None:
    config = parse(full_tls(creds))
    assert config.hub.auth == TlsAuth(creds["cert"], creds["key"], creds["ca"], "devices.internal")
    settings_ = config.hub_settings(identifier="serial-from-kv")
    assert settings_.identifier == "serial-from-kv"
    assert (settings_.server_cafile, settings_.server_sni) == (creds["ca"], "devices.internal")
    assert websocket_url(settings_) == "wss://devices.example.com/socket/websocket?vsn=2.0.0"


def test_configured_identifier_wins_over_the_kv_one() -> None:
    config = parse(MINIMAL.replace("[hub]\n", '[hub]\nidentifier = "cfg"\n'))
    assert config.hub_settings("from-kv").identifier == "cfg"


def test_hub_settings_without_any_identifier() -> None:
    with pytest.raises(ConfigError, match=f"^{SRC}: hub.identifier: not set"):
        parse(MINIMAL).hub_settings()


def test_secret_file_is_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("  abc123 \n\n")
    text = MINIMAL.replace('secret = "s3cret"', f'secret_file = "{secret}"')
    auth = parse(text).hub.auth
    assert isinstance(auth, SharedSecretAuth)
    assert auth.secret == "abc123"


# --- files --------------------------------------------------------------------------------


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nhlink.toml"
    path.write_text(MINIMAL)
    assert load_config(path).source == str(path)
    assert load_config(str(path)).hub.url == "wss://devices.example.com"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": cannot read: Is a directory$"):
        load_config(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[hub]\nurl = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: line 2: not UTF-8 text"


def test_toml_syntax_error_names_line_and_column() -> None:
    message = error_of('[hub]\nurl = "x"\nbroken line\n')
    assert message.startswith(f"{SRC}: invalid TOML: ")
    assert "(at line 3, column 8)" in message


def test_deeply_nested_toml_is_a_config_error() -> None:
    message = error_of("a = " + "[" * 5000 + "]" * 5000)
    assert message.startswith(f"{SRC}: invalid TOML")


def replace_with_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)  # opening it for reading would block: refused instead


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (Path.unlink, "No such file or directory"),
        (replace_with_directory, "not a regular file"),
        (replace_with_fifo, "not a regular file"),
    ],
    ids=["missing", "directory", "fifo"],
)
def test_unreadable_secret_file(
    tmp_path: Path, make: Callable[[Path], object], problem: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    make(secret)
    text = MINIMAL.replace('secret = "s3cret"', f'secret_file = "{secret}"')
    assert error_of(text) == (
        f"{SRC}: hub.shared_secret.secret_file: cannot read {secret}: {problem}"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "must hold the secret alone on one line"),
        (b"two\nlines\n", "must hold the secret alone on one line"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_bad_secret_file_content(tmp_path: Path, content: bytes, problem: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    text = MINIMAL.replace('secret = "s3cret"', f'secret_file = "{secret}"')
    assert error_of(text) == f"{SRC}: hub.shared_secret.secret_file: {secret} {problem}"


@pytest.mark.parametrize("key", ["certfile", "keyfile", "cafile"])
def test_unreadable_tls_file(creds: dict[str, str], key: str) -> None:
    name = {"certfile": "cert", "keyfile": "key", "cafile": "ca"}[key]
    os.unlink(creds[name])
    assert error_of(full_tls(creds)) == (
        f"{SRC}: hub.tls.{key}: cannot read {creds[name]}: No such file or directory"
    )


def test_unreadable_hub_cafile(creds: dict[str, str]) -> None:
    os.unlink(creds["ca"])
    assert error_of(full_nh1(creds)).startswith(f"{SRC}: hub.cafile: cannot read ")


# --- error forms --------------------------------------------------------------------------


def replace(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new, 1)


def add(table: str, line: str) -> str:
    """MINIMAL with ``line`` added to ``[table]`` (appended as a new table if absent)."""
    header = f"[{table}]\n"
    if header in MINIMAL:
        return MINIMAL.replace(header, header + line + "\n", 1)
    return MINIMAL + header + line + "\n"


ERRORS: list[tuple[str, str]] = [
    # unknown keys and tables, with suggestions
    (add("hub", "heartbeat_interval = 1"), "hub.heartbeat_interval: unknown key (did you mean"),
    (add("firmware", "aplier = 'fwup'"), "firmware.aplier: unknown key (did you mean 'applier'?)"),
    (add("hub.shared_secret", "secrets = 'x'"), "hub.shared_secret.secrets: unknown key"),
    (MINIMAL + "[hubb]\n", "hubb: unknown table (did you mean 'hub'?)"),
    ("typo = 1\n" + MINIMAL, "typo: unknown key"),
    (add("hub", "extra = { a = 1 }"), "hub.extra: unknown table"),
    # required keys and tables
    (replace('url = "wss://devices.example.com"', ""), "hub.url: missing (required)"),
    (replace('kv = "file:/var/lib/nhlink/kv.env"', ""), "firmware.kv: missing (required)"),
    ('[hub]\n[firmware]\nkv = "file:/x"\n', "hub.url: missing (required)"),
    (replace('key = "nhd_key"', ""), "hub.shared_secret.key: missing (required)"),
    (replace('secret = "s3cret"', ""), "hub.shared_secret.secret_file: missing (or give"),
    (replace("[hub.shared_secret]", "[hub.x]"), "hub: needs [hub.shared_secret] (NH1) or"),
    (
        MINIMAL + "[hub.tls]\ncertfile = '/a'\nkeyfile = '/b'\n",
        "hub: [hub.shared_secret] and [hub.tls] exclude each other: keep one",
    ),
    (
        replace('secret = "s3cret"', 'secret = "a"\nsecret_file = "/etc/secret"'),
        "hub.shared_secret.secret: set secret_file or secret, not both",
    ),
    (
        replace('[hub.shared_secret]\nkey = "nhd_key"\nsecret = "s3cret"', "[hub.tls]"),
        "hub.tls.certfile: missing (required)",
    ),
    # types
    (add("hub", 'heartbeat_interval_ms = "30s"'), "must be an integer (got a string '30s')"),
    (add("hub", "heartbeat_interval_ms = 3.5"), "must be an integer (got a float 3.5)"),
    (add("hub", "heartbeat_interval_ms = true"), "must be an integer (got a boolean True)"),
    (add("decisions", "ignore_same_uuid = 1"), "must be true or false (got an integer 1)"),
    (add("decisions", 'ignore_same_uuid = "yes"'), "must be true or false (got a string"),
    (replace('url = "wss://devices.example.com"', "url = 1979-05-27"), "got a date/time"),
    (replace('secret = "s3cret"', "secret = 12345"), "secret: must be a string (got an integer)"),
    ('hub = 1\n[firmware]\nkv = "file:/x"\n', "hub: must be a table (got an integer)"),
    (MINIMAL + "[[logging]]\n", "logging: must be a table (got an array)"),
    (add("firmware", "public_keys = 'abc'"), "firmware.public_keys: must be an array of strings"),
    (add("firmware", "public_keys = [1]"), "firmware.public_keys: item 0 must be a string"),
    (add("reboot", "command = 'systemctl reboot'"), "reboot.command: must be an array of"),
    (add("firmware", "fwup_env = []"), "firmware.fwup_env: must be a table of strings"),
    (add("firmware", "fwup_env = { A = 1 }"), "firmware.fwup_env.A: must be a string (got an"),
    # choices
    (add("firmware", "applier = 'x'"), "firmware.applier: must be one of auto, fwup, builtin"),
    (add("decisions", "default_update = 'reschedule'"), "must be one of apply, ignore (got"),
    (
        add("decisions", "default_archive = 'apply'"),
        "default_archive: must be one of download, ignore",
    ),
    (add("logging", "level = 'verbose'"), "logging.level: must be one of debug, info, warning"),
    (add("hub.shared_secret", "key_digest = 'md5'"), "must be one of sha256, sha384, sha512"),
    # ranges
    (add("hub", "heartbeat_interval_ms = 99"), "must be between 100 and 315360000000 (got 99)"),
    (add("hub", "rejoin_after_ms = -1"), "hub.rejoin_after_ms: must be between 0 and"),
    (add("decisions", "timeout_ms = 315360000001"), "decisions.timeout_ms: must be between"),
    (add("download", "max_disconnects = 0"), "download.max_disconnects: must be between 1 and"),
    (add("download", "idle_timeout_ms = 0"), "download.idle_timeout_ms: must be between 1"),
    (add("download", "max_timeout_ms = 0"), "download.max_timeout_ms: must be between 1"),
    (add("download", "worst_case_download_speed_bps = 0"), "worst_case_download_speed_bps: must"),
    (add("download", "max_redirects = 101"), "download.max_redirects: must be between 0 and 100"),
    (add("download", "time_between_retries_ms = -5"), "time_between_retries_ms: must be between"),
    (add("reboot", "retries = 101"), "reboot.retries: must be between 0 and 100 (got 101)"),
    (add("reboot", "delay_ms = -1"), "reboot.delay_ms: must be between 0"),
    (add("reboot", "retry_delay_ms = -1"), "reboot.retry_delay_ms: must be between 0"),
    (add("hub.shared_secret", "key_iterations = 0"), "key_iterations: must be between 1 and"),
    (add("hub.shared_secret", "key_length = 8"), "key_length: must be between 16 and 1024"),
    (add("hub", "rejoin_after_ms = 0x" + "f" * 400), "(got a huge number)"),
    # strings
    (replace("wss://devices.example.com", "https://x"), "hub.url: must be a wss:// (or ws://)"),
    (replace("wss://devices.example.com", "wss://"), "hub.url: not a valid URL ('wss://')"),
    (replace("wss://devices.example.com", "wss://h:99999"), "hub.url: not a valid URL"),
    (replace("wss://devices.example.com", "wss://[::1"), "hub.url: not a valid URL"),
    (replace("wss://devices.example.com", ""), "hub.url: must not be empty"),
    (add("hub", 'identifier = " "'), "hub.identifier: must be a non-empty string without"),
    (add("hub", 'identifier = "a\\nb"'), "hub.identifier: must be a non-empty string without"),
    (add("hub", 'sni = ""'), "hub.sni: must not be empty"),
    (replace('"nhd_key"', '"abc"'), "hub.shared_secret.key: must be a device key (nhd_...) or"),
    (replace('"s3cret"', '" s3cret"'), "secret: must not contain whitespace or control"),
    (replace('"s3cret"', '""'), "hub.shared_secret.secret: must not be empty"),
    (replace("file:/var/lib/nhlink/kv.env", "kv.env"), "firmware.kv: KV spec 'kv.env': expecting"),
    (replace("file:/var/lib/nhlink/kv.env", "file:kv.env"), "firmware.kv: the file path must be"),
    (replace("file:/var/lib/nhlink/kv.env", "uboot-env:/dev/x:zz:8"), "firmware.kv: bad number"),
    (add("firmware", "devpath = 'mmcblk0'"), "firmware.devpath: must be an absolute path"),
    (add("firmware", "fwup_path = 'fwup'"), "firmware.fwup_path: must be an absolute path (got"),
    (add("firmware", "task = ''"), "firmware.task: must not be empty"),
    (add("firmware", 'task = "a\\tb"'), "firmware.task: must not contain control characters"),
    (add("firmware", 'devpath = "/dev/\\u0000"'), "firmware.devpath: must not contain NUL"),
    (add("archives", "dir = 'archives'"), "archives.dir: must be an absolute path"),
    (add("service", "state_dir = 'state'"), "service.state_dir: must be an absolute path"),
    (add("service", "boot_id_file = ''"), "service.boot_id_file: must not be empty"),
    (add("archives", "max_count = 0"), "archives.max_count: must be between 1 and 100000"),
    (add("media", "mount_dir = 'media'"), "media.mount_dir: must be an absolute path"),
    (add("media", "folders = []"), "media.folders: must name at least one folder"),
    (add("media", "folders = ['../up']"), "media.folders: item 0 ('../up') must not contain '..'"),
    (add("media", "folders = ['a/../../b']"), "media.folders: item 0 ('a/../../b') must not"),
    (add("media", "folders = ['/mnt']"), "media.folders: item 0 ('/mnt') must be a relative"),
    (add("media", "folders = ['a\\b']"), "must not contain control characters or backslashes"),
    (add("media", "folders = [1]"), "media.folders: item 0 must be a string"),
    (add("media", "enabled = 'yes'"), "media.enabled: must be true or false"),
    (add("media", "max_bytes = 0"), "media.max_bytes: must be between 1 and"),
    (add("decisions", "group = 'bad group'"), "decisions.group: not a valid group name"),
    (add("decisions", "group = ''"), "decisions.group: must not be empty"),
    (add("reboot", "command = []"), 'reboot.command: must name a program, e.g. ["systemctl"'),
    (add("reboot", "command = ['']"), "reboot.command: must name a program"),
    (add("reboot", 'command = ["a\\u0000"]'), "reboot.command: item 0 must not contain NUL"),
    (add("firmware", "fwup_env = { 'A-B' = 'x' }"), "'A-B' is not a valid environment variable"),
    (add("firmware", "fwup_env = { 1A = 'x' }"), "'1A' is not a valid environment variable"),
    # keys
    (add("firmware", "public_keys = ['abc']"), "firmware.public_keys: item 0 is not a base64"),
    (
        add("archives", f"public_keys = ['{KEY_A}', '{KEY_A[:-4]}']"),
        "archives.public_keys: item 1 is not a base64 Ed25519 public key (32 bytes)",
    ),
    (add("firmware", "public_keys = ['é']"), "item 0 is not a base64 Ed25519 public key"),
    (
        add("firmware", f"public_keys = ['{base64.b64encode(bytes(33)).decode()}']"),
        "item 0 is not a base64 Ed25519 public key",
    ),
    # files
    (add("hub", "cafile = '/nonexistent/ca.pem'"), "hub.cafile: cannot read /nonexistent/ca.pem"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS, ids=[e[1][:40] for e in ERRORS])
def test_error_names_file_key_and_problem(text: str, expected: str) -> None:
    message = error_of(text)
    assert message.startswith(f"{SRC}: ")
    assert expected in message


def test_error_message_exact_form() -> None:
    assert error_of(add("firmware", "applier = 'x'")) == (
        f"{SRC}: firmware.applier: must be one of auto, fwup, builtin (got 'x')"
    )


def test_hub_cafile_and_sni_refused_with_tls(creds: dict[str, str]) -> None:
    text = full_tls(creds).replace("[hub.tls]", f'cafile = "{creds["ca"]}"\n[hub.tls]')
    assert error_of(text) == f"{SRC}: hub.cafile: with [hub.tls], set hub.tls.cafile instead"
    text = full_tls(creds).replace("[hub.tls]", 'sni = "x"\n[hub.tls]')
    assert error_of(text) == f"{SRC}: hub.sni: with [hub.tls], set hub.tls.sni instead"


def test_every_key_is_known_and_nothing_else(creds: dict[str, str]) -> None:
    """The full documents use every SCHEMA key; anything else is refused."""
    documents = [full_nh1(creds), full_tls(creds), MINIMAL]
    used: dict[str, set[str]] = {}
    for text in documents:
        section = ""
        for line in text.splitlines():
            if m := re.fullmatch(r"\[([a-z_.]+)\]", line.strip()):
                section = m.group(1)
            elif "=" in line:
                used.setdefault(section, set()).add(line.split("=")[0].strip())
    assert used == SCHEMA
    for table in SCHEMA:
        if table == "hub.tls":
            text = full_tls(creds).replace("[hub.tls]\n", "[hub.tls]\nnot_a_key = 1\n")
        else:
            text = add(table, "not_a_key = 1")
        assert error_of(text).startswith(f"{SRC}: {table}.not_a_key: unknown key")


# --- the shipped example and the man page -------------------------------------------------


def example_entries() -> list[tuple[str, str, bool]]:
    """(table, key, active) for every setting line of the example, set or ``#:``-commented."""
    entries = []
    table = ""
    for raw in EXAMPLE.read_text().splitlines():
        active = not raw.startswith("#:")
        line = raw.removeprefix("#:").strip()
        if raw.startswith("#") and active:
            continue
        if m := re.fullmatch(r"\[([a-z_.]+)\]", line):
            table = m.group(1)
        elif "=" in line:
            entries.append((table, line.split("=")[0].strip(), active))
    return entries


def example_variant(tmp_path: Path, keep: Callable[[str, str, bool], bool]) -> Config:
    """The example with ``#:`` lines uncommented where ``keep(table, key, active)`` and
    inactive ones dropped otherwise; /etc/nhlink files are made in ``tmp_path``."""
    out = []
    table = ""
    for raw in EXAMPLE.read_text().splitlines():
        commented = raw.startswith("#:")
        line = raw.removeprefix("#:").strip() if commented else raw
        if m := re.fullmatch(r"\[([a-z_.]+)\]", line.strip()):
            table = m.group(1)
            if keep(table, "", not commented):
                out.append(line)
            continue
        if "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=")[0].strip()
            if keep(table, key, not commented):
                out.append(line)
            continue
        out.append(raw if not commented else "")
    etc = tmp_path / "etc-nhlink"
    etc.mkdir(exist_ok=True)
    for name in ("secret", "device.pem", "device-key.pem", "hub-ca.pem"):
        (etc / name).write_text("example\n")
    path = tmp_path / "nhlink.toml"
    path.write_text("\n".join(out).replace("/etc/nhlink/", f"{etc}/") + "\n")
    return load_config(path)


def test_no_hub_table_is_not_configured() -> None:
    # Only a file without any [hub] table; an empty or partial one is an error (above).
    config = parse('[firmware]\nkv = "file:/x"\n')
    assert config.hub is None
    assert config.not_configured() == (
        f"not configured: {SRC} has no [hub] table, so no hub is contacted"
    )
    assert parse(MINIMAL).not_configured() is None


def test_example_loads_as_shipped(tmp_path: Path) -> None:
    # As installed (/etc/nhlink/nhlink.toml): no [hub] table, so not configured.
    config = example_variant(tmp_path, lambda table, key, active: active)
    assert config.hub is None
    assert config.not_configured() == (
        f"not configured: {config.source} has no [hub] table, so no hub is contacted"
    )
    with pytest.raises(ConfigError, match=r"has no \[hub\] table"):
        config.hub_settings("kiosk-1")
    assert config.firmware.kv == "uboot-env:/dev/mmcblk0:0x100000:0x2000"
    # Shipped values are the defaults (only kv is an example).
    defaults = parse(MINIMAL)
    assert config.decisions == defaults.decisions
    assert config.reboot == defaults.reboot
    assert config.download == defaults.download
    assert config.logging == defaults.logging
    assert config.archives == defaults.archives
    assert config.service == defaults.service
    assert (config.firmware.task, config.firmware.applier) == ("upgrade", "auto")


def test_example_hub_uncommented_connects_with_defaults(tmp_path: Path) -> None:
    # What the comment at [hub] tells a user to do: uncomment [hub], its url and
    # the shared-secret table's active lines. The hub's commented values are defaults.
    def hub(table: str, key: str, active: bool) -> bool:
        optional = {("hub", "identifier"), ("hub", "cafile"), ("hub", "sni")}
        if table == "hub.tls" or (table, key) in optional:
            return False
        if (table, key) == ("hub.shared_secret", "secret"):
            return False
        return active or table in ("hub", "hub.shared_secret")

    config = example_variant(tmp_path, hub)
    assert config.not_configured() is None
    assert config.hub is not None
    assert config.hub.url == "wss://devices.example.com"
    assert isinstance(config.hub.auth, SharedSecretAuth)
    assert config.hub.auth.params == NH1Params()
    defaults = parse(MINIMAL)
    assert defaults.hub is not None
    assert config.hub.heartbeat_interval_ms == defaults.hub.heartbeat_interval_ms
    assert config.hub.rejoin_after_ms == defaults.hub.rejoin_after_ms
    assert config.hub_settings("kiosk-1").identifier == "kiosk-1"


def test_example_optional_settings_load(tmp_path: Path) -> None:
    # Every "#:" line switched on, except the exclusive alternatives.
    def nh1(table: str, key: str, active: bool) -> bool:
        if table == "hub.tls" or (table, key) == ("hub.shared_secret", "secret"):
            return False
        if (table, key) == ("firmware", "public_keys"):
            return not active  # the commented example replaces the empty default
        return True

    config = example_variant(tmp_path, nh1)
    assert config.hub.identifier == "kiosk-0042"
    assert config.firmware.fwup_env == {"NHLINK_BOARD": "kiosk-v2"}
    assert len(config.firmware.public_keys) == 1
    assert config.reboot.command == ("/usr/bin/systemctl", "reboot", "--force")


def test_example_tls_alternative_loads(tmp_path: Path) -> None:
    def tls(table: str, key: str, active: bool) -> bool:
        if table == "hub.shared_secret":
            return False
        if table == "hub" and key in ("cafile", "sni"):
            return False
        return active or table in ("hub", "hub.tls")

    config = example_variant(tmp_path, tls)
    assert isinstance(config.hub.auth, TlsAuth)
    assert config.hub.auth.sni == "devices.example.com"


def test_example_inline_secret_alternative_loads(tmp_path: Path) -> None:
    def inline(table: str, key: str, active: bool) -> bool:
        if table == "hub.shared_secret" and key in ("secret", "secret_file"):
            return key == "secret"
        if table == "hub" and key in ("identifier", "cafile", "sni"):
            return False
        return active or table in ("hub", "hub.shared_secret")

    auth = example_variant(tmp_path, inline).hub.auth
    assert isinstance(auth, SharedSecretAuth)
    assert auth.secret == "exampleSecret0123456789abcdefghijklmnopqrstu"


def test_example_lists_every_key() -> None:
    listed: dict[str, set[str]] = {}
    for table, key, _active in example_entries():
        listed.setdefault(table, set()).add(key)
    assert listed == SCHEMA


def test_man_page_documents_every_key() -> None:
    text = MAN_PAGE.read_text()
    sections = dict(re.findall(r"^# \[([a-z_.]+)\]\n(.*?)(?=^# |\Z)", text, re.M | re.S))
    assert set(sections) == set(SCHEMA)
    for table, keys in SCHEMA.items():
        documented = set(re.findall(r"^`([a-z_]+)` \(", sections[table], re.M))
        assert documented == keys, table


def documented_integers() -> list[tuple[str, str, int, int | None, int]]:
    """(table, key, minimum, maximum or None, default) of every integer in the man page."""
    text = MAN_PAGE.read_text()
    sections = re.findall(r"^# \[([a-z_.]+)\]\n(.*?)(?=^# |\Z)", text, re.M | re.S)
    found = []
    for table, body in sections:
        pattern = r"^`([a-z_]+)` \(integer (?:>= (\d+)|(\d+)\.\.(\d+)), default (\d+)\)"
        for key, at_least, low, high, default in re.findall(pattern, body, re.M):
            minimum = int(at_least or low)
            found.append((table, key, minimum, int(high) if high else None, int(default)))
    return found


def configured(config: Config, table: str, key: str) -> object:
    """The value ``config`` holds for ``table.key`` (None where it keeps none)."""
    if table == "hub.shared_secret":
        auth = config.hub.auth
        assert isinstance(auth, SharedSecretAuth)
        return getattr(auth.params, key.removeprefix("key_"), getattr(auth, key, None))
    return getattr(getattr(config, table, None), key, None)


def test_man_page_integers_are_the_parsers_defaults_and_ranges() -> None:
    # The defaults and ranges live on the dataclass fields (core.bounds); the
    # man page must say the same, and so must the parser.
    documented = documented_integers()
    defaults = parse(MINIMAL)
    integers = {
        (table, key)
        for table, keys in SCHEMA.items()
        for key in keys
        if type(configured(defaults, table, key)) is int
    }
    assert {(t, k) for t, k, *_ in documented} == integers
    for table, key, minimum, maximum, default in documented:
        assert configured(defaults, table, key) == default, key
        assert configured(parse(add(table, f"{key} = {minimum}")), table, key) == minimum
        assert "must be between" in error_of(add(table, f"{key} = {minimum - 1}")), key
        if maximum is not None:
            assert configured(parse(add(table, f"{key} = {maximum}")), table, key) == maximum
            assert "must be between" in error_of(add(table, f"{key} = {maximum + 1}")), key


# --- properties ---------------------------------------------------------------------------

KEY_NAMES = sorted({k for keys in SCHEMA.values() for k in keys} | {"x", "Url", "hub"})
TABLE_NAMES = [*SCHEMA, "hubb", "hub.shared_secret.extra"]

toml_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.sampled_from(["true", "false", "1.5", "inf", "nan", "1979-05-27", "07:32:00", "0xff"]),
    st.text(max_size=30).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
    st.sampled_from(
        [
            '"wss://h"',
            '"ws://[::1]:80"',
            '"file:/kv"',
            '"uboot-env:/dev/x:0:8"',
            '"nhd_k"',
            '"/etc/passwd"',
            '"/dev/null"',
            '"/"',
            f'"{KEY_A}"',
            '"auto"',
            '"apply"',
        ]
    ),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(KEY_NAMES), inner), max_size=3).map(
            lambda pairs: "{" + ", ".join(f"{k} = {v}" for k, v in pairs) + "}"
        ),
    ),
    max_leaves=6,
)
toml_lines = st.one_of(
    st.tuples(st.sampled_from(KEY_NAMES), toml_values).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.sampled_from(TABLE_NAMES).map(lambda t: f"[{t}]"),
    st.text(max_size=20),
)


def check_value_or_config_error(text: str) -> None:
    try:
        result: Any = parse_config(text, SRC)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{SRC}: ") and "\n" not in message
    else:
        assert isinstance(result, Config)


@settings(max_examples=400, deadline=None)
@given(st.lists(toml_lines, max_size=25))
def test_random_documents_give_a_config_or_a_config_error(lines: list[str]) -> None:
    check_value_or_config_error("\n".join(lines))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(sorted(SCHEMA)), st.sampled_from(KEY_NAMES), toml_values))
)
def test_valid_base_with_random_overrides(overrides: list[tuple[str, str, str]]) -> None:
    text = MINIMAL
    for table, key, value in overrides:
        text = add(table, f"{key} = {value}") if f"\n{key} =" not in text else text
    check_value_or_config_error(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_example_gives_a_config_or_a_config_error(data: st.DataObject) -> None:
    text = EXAMPLE.read_text()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 8))
        insert = data.draw(st.text(max_size=8))
        text = text[:at] + insert + text[at + cut :]
    check_value_or_config_error(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape(raw: bytes) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    check_value_or_config_error(text)
