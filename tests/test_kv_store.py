"""Writing the KV store (kv_store.update_kv): a key=value file, a U-Boot environment as
fwup writes it, and a redundant one written into the copy that was not read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nhlink_dbus.core import uboot_env
from nhlink_dbus.core.kv_format import KVError
from nhlink_dbus.kv_store import read_kv, update_kv

SIZE = 0x2000


def test_file_store_keeps_comments_and_order(tmp_path: Path) -> None:
    path = tmp_path / "kv.env"
    path.write_text("# the KV\nnerves_fw_active=a\na.nerves_fw_validated=0\n")
    path.chmod(0o640)
    kv = update_kv(f"file:{path}", {"a.nerves_fw_validated": "1", "bootcount": "0"})
    assert kv == {"nerves_fw_active": "a", "a.nerves_fw_validated": "1", "bootcount": "0"}
    assert path.read_text() == (
        "# the KV\nnerves_fw_active=a\na.nerves_fw_validated=1\nbootcount=0\n"
    )
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["kv.env"]  # no temporary left


def test_uboot_env_as_fwup_writes_it(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    block = uboot_env.encode({"nerves_fw_active": "a", "nerves_fw_validated": "0"}, SIZE)
    image.write_bytes(b"\0" * 512 + block + b"\0" * 512)
    spec = f"uboot-env:{image}:512:{SIZE:#x}"
    kv = update_kv(spec, {"nerves_fw_validated": "1", "a.nerves_fw_validated": "1"})
    assert (
        kv
        == read_kv(spec)
        == {
            "nerves_fw_active": "a",
            "nerves_fw_validated": "1",
            "a.nerves_fw_validated": "1",
        }
    )
    data = image.read_bytes()
    assert data[:512] == b"\0" * 512 and data[512 + SIZE :] == b"\0" * 512


def test_redundant_env_writes_the_other_copy_with_the_next_flags(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    primary = uboot_env.encode({"x": "old"}, SIZE, flags=5)
    secondary = uboot_env.encode({"x": "older"}, SIZE, flags=4)
    image.write_bytes(primary + secondary)
    spec = f"uboot-env:{image}:0,{SIZE}:{SIZE:#x}"
    assert update_kv(spec, {"x": "new"}) == {"x": "new"}
    data = image.read_bytes()
    assert data[:SIZE] == primary  # the copy read is kept until the next write
    assert data[SIZE + 4] == 6 and uboot_env.decode(data[SIZE:], redundant=True) == {"x": "new"}


def test_bad_values_and_stores_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "kv.env"
    path.write_text("a=1\n")
    for bad in ({"a=b": "1"}, {"a": "x\ny"}, {"": "1"}):
        with pytest.raises(KVError):
            update_kv(f"file:{path}", bad)
    assert path.read_text() == "a=1\n"
    image = tmp_path / "blank.img"
    image.write_bytes(b"\xff" * SIZE)
    with pytest.raises(KVError, match="CRC32"):
        update_kv(f"uboot-env:{image}:0:{SIZE:#x}", {"a": "1"})
    with pytest.raises(KVError):
        update_kv(f"file:{tmp_path / 'missing'}", {"a": "1"})
    full = tmp_path / "full.img"
    full.write_bytes(uboot_env.encode({"k": "v"}, 64))
    with pytest.raises(KVError, match="Not enough room"):
        update_kv(f"uboot-env:{full}:0:64", {"big": "x" * 100})
    assert os.path.getsize(full) == 64
