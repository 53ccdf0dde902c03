"""Start-up warnings about configuration and key files others can read or change
(config.exposure_warnings; the daemon logs each one)."""

from __future__ import annotations

import grp
import os
from pathlib import Path

from nhlink_dbus.config import exposure_warnings, load_config
from nhlink_devtools.hubsim.certs import generate_ca, issue_device_cert
from tests.harness import PrivateSystemBus
from tests.integration.daemon_helpers import Daemon, until

INLINE = """
[hub]
url = "wss://devices.example.com"
identifier = "kiosk-1"
[hub.shared_secret]
key = "nhd_key"
secret = "s3cret"
[firmware]
kv = "file:/var/lib/nhlink/kv.env"
"""


def _write(path: Path, text: str, mode: int, group: str | None = None) -> Path:
    path.write_text(text)
    path.chmod(mode)
    if group is not None:
        os.chown(path, 0, grp.getgrnam(group).gr_gid)
    return path


def _warnings(config_path: Path) -> list[str]:
    return exposure_warnings(load_config(config_path))


def test_an_inline_secret_in_a_world_readable_file_is_named(tmp_path: Path) -> None:
    config = _write(tmp_path / "nhlink.toml", INLINE, 0o644)
    assert _warnings(config) == [
        f"{config} holds the NH1 shared secret inline and is readable by every user: "
        f"chmod 600 {config} (or move the secret to hub.shared_secret.secret_file)"
    ]
    config.chmod(0o600)
    assert _warnings(config) == []
    config.chmod(0o640)  # root's group: fine
    assert _warnings(config) == []
    _write(config, INLINE, 0o640, group="nogroup")
    assert _warnings(config) == [
        f"{config} holds the NH1 shared secret inline and is readable by group nogroup: "
        f"chmod 600 {config} (or move the secret to hub.shared_secret.secret_file)"
    ]


def test_a_secret_file_and_a_private_key_readable_by_others_are_named(tmp_path: Path) -> None:
    secret = _write(tmp_path / "secret", "s3cret\n", 0o644)
    text = INLINE.replace('secret = "s3cret"', f'secret_file = "{secret}"')
    config = _write(tmp_path / "nhlink.toml", text, 0o644)  # no secret in it: 0644 is fine
    assert _warnings(config) == [
        f"{secret} holds the NH1 shared secret and is readable by every user: chmod 600 {secret}"
    ]
    secret.chmod(0o600)
    assert _warnings(config) == []

    ca = generate_ca(tmp_path / "pki", "ca")
    device = issue_device_cert(ca, "kiosk-1", tmp_path / "pki")
    device.key.chmod(0o644)
    tls = INLINE.replace(
        '[hub.shared_secret]\nkey = "nhd_key"\nsecret = "s3cret"',
        f'[hub.tls]\ncertfile = "{device.cert}"\nkeyfile = "{device.key}"',
    )
    config = _write(tmp_path / "tls.toml", tls, 0o644)
    assert _warnings(config) == [
        f"{device.key} holds the device's private key and is readable by every user: "
        f"chmod 600 {device.key}"
    ]


def test_files_others_can_change_are_named(tmp_path: Path) -> None:
    secret = _write(tmp_path / "secret", "s3cret\n", 0o602)
    text = INLINE.replace('secret = "s3cret"', f'secret_file = "{secret}"')
    config = _write(tmp_path / "nhlink.toml", text, 0o664, group="nogroup")
    hint = "(it decides which hub and which firmware this device trusts)"
    assert _warnings(config) == [
        f"{config} can be changed by group nogroup {hint}: chmod go-w {config}",
        f"{secret} can be changed by every user {hint}: chmod go-w {secret}",
    ]


def test_fwup_env_makes_the_configuration_a_secret(tmp_path: Path) -> None:
    text = INLINE.replace('secret = "s3cret"', 'secret_file = "/dev/null"')
    secret = _write(tmp_path / "secret", "s3cret\n", 0o600)
    text = text.replace("/dev/null", str(secret)) + '[firmware.fwup_env]\nKEY = "x"\n'
    config = _write(tmp_path / "nhlink.toml", text, 0o644)
    assert _warnings(config) == [
        f"{config} holds firmware.fwup_env and is readable by every user: chmod 600 {config}"
    ]


async def test_the_daemon_says_so_at_start_up(tmp_path: Path, system_bus: PrivateSystemBus) -> None:
    text = INLINE.replace("wss://", "ws://") + (  # nothing of the host's: folders, udev
        f'[service]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[archives]\ndir = "{tmp_path / "archives"}"\n[media]\nenabled = false\n'
    )
    config = _write(tmp_path / "nhlink.toml", text, 0o644)
    daemon = Daemon(config, tmp_path / "daemon.log", system_bus.address)
    try:
        await until(lambda: "starting" in daemon.text(), 20, "the start", daemon)
    finally:
        assert daemon.stop() == 0, daemon.text()
    (line,) = [line for line in daemon.text().splitlines() if "readable by" in line]
    assert " WARNING " in line and "readable by every user" in line
    assert "s3cret" not in daemon.text()
