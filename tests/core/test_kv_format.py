"""KV store: U-Boot environment written by the applier, and key=value files."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core import uboot_env
from nhlink_dbus.core.kv_format import (
    KVError,
    active_slot_metadata,
    parse_env_file,
    parse_kv_spec,
    parse_uboot_block,
)
from nhlink_dbus.errors import ConfigError
from nhlink_dbus.kv_store import read_kv

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fwup"
AB_ENV = "uboot-env:{}:0x20000:0x2000"  # ab.conf: block 256, 16 blocks


def _apply(image: Path, task: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "nhlink_dbus.fwup.cli",
        "-a",
        "-q",
        "-d",
        str(image),
        "-t",
        task,
        "-i",
        str(FIXTURES / "ab.fw"),
        "-p",
        str(FIXTURES / "fwup-key.pub"),
    ]
    subprocess.run(cmd, check=True, capture_output=True)


def test_kv_after_real_ab_updates(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(64 << 20)
    _apply(image, "complete")
    kv = read_kv(AB_ENV.format(image))
    assert kv["nerves_fw_active"] == "a"
    assert kv["nerves_fw_devpath"] == "/dev/sda"
    meta = active_slot_metadata(kv)
    # ab.expect.md: the UUID fwup stores is the archive's meta-uuid
    assert meta["nerves_fw_uuid"] == "bb2fee49-58a0-5cce-0e76-15d7a5a130b6"
    assert meta["nerves_fw_version"] == "2.0.0"
    assert "nerves_fw_active" not in meta
    _apply(image, "upgrade")
    kv = read_kv(AB_ENV.format(image))
    assert kv["nerves_fw_active"] == "b"
    assert active_slot_metadata(kv)["nerves_fw_uuid"] == "bb2fee49-58a0-5cce-0e76-15d7a5a130b6"
    assert active_slot_metadata(kv)["nerves_fw_product"] == "nhlink-test"


def test_blank_image_is_a_clear_error(tmp_path: Path) -> None:
    image = tmp_path / "blank.img"
    with image.open("wb") as fh:
        fh.truncate(1 << 20)
    with pytest.raises(KVError, match="CRC"):
        read_kv(AB_ENV.format(image))
    with pytest.raises(KVError):
        read_kv(f"file:{tmp_path / 'missing.env'}")


def test_env_file(tmp_path: Path) -> None:
    path = tmp_path / "kv.env"
    path.write_text("# comment\nnerves_fw_active=b\nb.nerves_fw_uuid=1234\nb.x=a=b\n\n")
    kv = read_kv(f"file:{path}")
    assert active_slot_metadata(kv) == {"nerves_fw_uuid": "1234", "x": "a=b"}
    with pytest.raises(KVError, match="line 1"):
        parse_env_file("novalue\n")


def test_single_slot_store() -> None:
    kv = {"nerves_fw_uuid": "u", "nerves_fw_devpath": "/dev/x", "nerves_fw_version": "1"}
    assert active_slot_metadata(kv) == {"nerves_fw_uuid": "u", "nerves_fw_version": "1"}


@pytest.mark.parametrize(
    "spec",
    ["", "file:", "uboot-env:/dev/x", "uboot-env:/dev/x:zz:0x2000", "nfs:/x", "uboot-env::0:8192"],
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_kv_spec(spec)


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_.]{1,12}", fullmatch=True),
        st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=20),
        max_size=20,
    )
)
def test_uboot_round_trip(values: dict[str, str]) -> None:
    assert parse_uboot_block(uboot_env.encode(values, 8192)) == values


@given(st.binary(min_size=0, max_size=600))
def test_uboot_garbage_is_value_or_kverror(block: bytes) -> None:
    with contextlib.suppress(KVError):
        parse_uboot_block(block)
