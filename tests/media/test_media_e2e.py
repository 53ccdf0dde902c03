"""Issue 10, from removable media: the real daemon under umockdev (a USB stick record,
``add``/``remove`` uevents at run time), real file-system images on loop devices the
test attached, a private system bus, nhlink-hub-sim and dbusmock's logind.

Nothing here touches the host's udev, mounts or block devices: the daemon sees the
umockdev test bed instead of the host's ``/sys``; the stick's device node is a loop
device of this test; mounts go under the test's folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.kv_store import read_kv
from nhlink_devtools.ab_layout import AbLayout, build_ab_firmware
from nhlink_devtools.fw_builder import load_private_key
from tests.harness import LogindMock, PrivateSystemBus
from tests.integration.archive_helpers import GOOD_KEY, WRONG_KEY, make_archive, sha256
from tests.integration.archive_helpers import running_device as make_device
from tests.integration.daemon_helpers import make_firmware, until
from tests.media.media_helpers import (
    ext4_image,
    fat_image,
    kernel_mounts,
    mount_options,
    mounts_of,
    stick_and_daemon,
)

MAX_BYTES = 3 << 20


def media_config(
    tmp_path: Path, folders: str = '["nerves-hub", ".", "up"]', mount: str = "true"
) -> str:
    return (
        f'enabled = true\nmount = {mount}\nmount_dir = "{tmp_path / "media"}"\n'
        f"folders = {folders}\nmax_bytes = {MAX_BYTES}\n"
    )


async def test_archives_on_an_ext4_stick(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _fw, image = make_device(tmp_path)
    stick = tmp_path / "stick"
    (stick / "nerves-hub").mkdir(parents=True)
    signed, uuid = make_archive(stick / "nerves-hub", "signed")
    make_archive(stick / "nerves-hub", "unsigned", key=None)
    make_archive(stick / "nerves-hub", "wrong", key=WRONG_KEY)
    (stick / "nerves-hub" / "._signed.fw").write_bytes(signed.read_bytes())  # AppleDouble
    (stick / "nerves-hub" / ".hidden.fw").write_bytes(signed.read_bytes())
    outside, _ = make_archive(tmp_path, "outside")
    (stick / "nerves-hub" / "escape.fw").symlink_to("../../outside.fw")  # a ../ way out
    (stick / "nerves-hub" / "absolute.fw").symlink_to(outside)  # out of the medium
    (stick / "up").symlink_to("..")  # a configured folder that is a symlink
    make_archive(stick, "oversized", size=MAX_BYTES + (1 << 20))
    (stick / "README.txt").write_text("not a candidate\n")
    folder = tmp_path / "archives"

    fs = ext4_image(stick, tmp_path / "stick.img")
    async with stick_and_daemon(
        tmp_path, fs, "ext4", system_bus, image, media_config(tmp_path)
    ) as s:
        client, devnode, log = s.client, s.devnode, s.daemon.text
        s.plug()
        ((dev, mount_point, candidates),) = await client.wait_for("MediaAdded", log=log)
        assert dev == devnode
        assert mount_point == str(tmp_path / "media" / Path(devnode).name)
        assert candidates == 3  # signed, unsigned, wrong; nothing else qualifies
        assert mounts_of(devnode) == [mount_point]
        assert {"ro", "nosuid", "nodev", "noexec"} <= mount_options(mount_point)

        ((rid, info),) = await client.wait_for("ArchiveAvailable", log=log)
        assert info["source"] == "removable" and info["uuid"] == uuid
        assert (info["device"], info["file"]) == (devnode, "nerves-hub/signed.fw")
        errors = await client.wait_for("Error", count=2, log=log)
        texts = sorted(e[0] for e in errors)
        assert "nerves-hub/unsigned.fw refused" in texts[0]
        assert "Expecting signed firmware archive" in texts[0]
        assert "nerves-hub/wrong.fw refused" in texts[1]
        assert "digital signature verification" in texts[1]

        # copied and verified before it was announced: the copy waits for the decision
        staged = [n for n in os.listdir(folder) if n.endswith(".staged")]
        assert staged == [f"{uuid}.fw.{Path(devnode).name}.staged"]
        await client.call("Decide", "sst", [rid, "download", 0])
        ((_rid, ready_info, path),) = await client.wait_for("ArchiveReady", log=log)
        assert path == str(folder / f"{uuid}.fw")
        assert sha256(Path(path)) == sha256(signed)
        assert ready_info["source"] == "removable"
        assert sorted(os.listdir(folder)) == [f"{uuid}.fw"]

        s.pull()
        (removed,) = await client.wait_for("MediaRemoved", log=log)
        assert removed == [devnode]
        await until(
            lambda: not mounts_of(devnode) and not Path(mount_point).exists(),
            30,
            "the unmount",
            s.daemon,
        )
        assert sha256(Path(path)) == sha256(signed)  # the ready archive stays
        # Only the two refused files were reported; nothing skipped was.
        assert len(client.named("Error")) == 2
        text = log()
        assert "nerves-hub/escape.fw skipped: a symlink" in text
        assert "nerves-hub/absolute.fw skipped: a symlink" in text
        assert "nerves-hub/._signed.fw skipped: AppleDouble file" in text
        assert "nerves-hub/.hidden.fw skipped: hidden file" in text
        assert "oversized.fw skipped: " in text and "over [media] max_bytes" in text
        assert "up skipped: not a folder" in text
    assert s.mounts_after_stop == []


async def test_firmware_on_a_stick_is_offered_and_applied(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    running, image = make_device(tmp_path)
    stick = tmp_path / "stick"
    (stick / "nerves-hub").mkdir(parents=True)
    update = make_firmware(stick / "nerves-hub", "2.0.0", 1 << 20)
    key = load_private_key(GOOD_KEY.read_text())
    build_ab_firmware(
        stick / "nerves-hub" / "other.fw", "3.0.0", os.urandom(4096), key, product="other-product"
    )
    layout = AbLayout()
    before = image.read_bytes()

    fs = ext4_image(stick, tmp_path / "stick.img")
    media = media_config(tmp_path, '["nerves-hub"]')
    async with stick_and_daemon(tmp_path, fs, "ext4", system_bus, image, media) as s:
        client, log = s.client, s.daemon.text
        s.plug()
        ((_dev, _mount_point, candidates),) = await client.wait_for("MediaAdded", log=log)
        assert candidates == 2
        ((rid, info),) = await client.wait_for("UpdateAvailable", log=log)
        assert info["source"] == "removable" and info["uuid"] == update.uuid
        assert (info["device"], info["file"]) == (s.devnode, f"nerves-hub/{update.path.name}")
        ((error,),) = await client.wait_for("Error", log=log)
        assert "nerves-hub/other.fw refused: firmware for another device" in error
        assert "'other-product'" in error

        await client.call("Decide", "sst", [rid, "apply", 0])
        ((_rid, success, message),) = await client.wait_for("UpdateFinished", log=log)
        assert success, message
        await client.wait_for("RebootScheduled")
        await until(logind_mock.reboot_calls, 20, "Reboot", s.daemon)
        assert logind_mock.reboot_calls() == [False]
        assert [p for (p,) in client.named("FwupProgress")][-1] == 100
        s.pull()
        await client.wait_for("MediaRemoved", log=log)
    kv = read_kv(layout.kv_spec(image))
    assert kv["nerves_fw_active"] == "b"
    assert active_slot_metadata(kv)["nerves_fw_uuid"] == update.uuid != running.uuid
    after = image.read_bytes()
    a0, a1 = 4096 * 512, layout.rootfs_b * 512
    assert after[a0:a1] == before[a0:a1]  # the running slot was not touched


async def test_archive_on_a_fat_stick(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _fw, image = make_device(tmp_path)
    files = tmp_path / "files"
    files.mkdir()
    signed, uuid = make_archive(files, "signed")
    big, _ = make_archive(files, "big", size=MAX_BYTES + (1 << 20))
    fs = fat_image(
        {
            "nerves-hub/Content Pack.fw": signed,
            "nerves-hub/._Content Pack.fw": signed,
            "nerves-hub/.hidden.fw": signed,
            "big.fw": big,
        },
        tmp_path / "fat.img",
    )
    vfat = kernel_mounts("vfat")
    folder = tmp_path / "archives"

    async with stick_and_daemon(
        tmp_path, fs, "vfat", system_bus, image, media_config(tmp_path)
    ) as s:
        client, devnode, log = s.client, s.devnode, s.daemon.text
        s.plug()
        ((_dev, mount_point, candidates),) = await client.wait_for("MediaAdded", log=log)
        assert candidates == 1
        if vfat:
            assert mount_point and mounts_of(devnode) == [mount_point]
        else:  # this kernel has no vfat: read with mtools, nothing mounted
            assert mount_point == "" and mounts_of(devnode) == []
            assert "reading the FAT file system with mtools" in log()
        ((rid, info),) = await client.wait_for("ArchiveAvailable", log=log)
        assert (info["uuid"], info["file"]) == (uuid, "nerves-hub/Content Pack.fw")
        await client.call("Decide", "sst", [rid, "download", 0])
        ((_rid, _info, path),) = await client.wait_for("ArchiveReady", log=log)
        assert path == str(folder / f"{uuid}.fw")
        assert sha256(Path(path)) == sha256(signed)
        s.pull()
        await client.wait_for("MediaRemoved", log=log)
        assert client.named("Error") == []
        text = log()
        assert "._Content Pack.fw skipped: AppleDouble file" in text
        assert ".hidden.fw skipped: hidden file" in text
        assert "big.fw skipped: " in text


async def test_the_desktop_mount_is_used_and_left_alone(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    """[media] mount = false: the daemon waits for the desktop's mount (here the test
    mounts, after the uevent, as udisks would), reads it there, and never unmounts it."""
    _fw, image = make_device(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    _signed, uuid = make_archive(stick, "content")
    desktop = tmp_path / "desktop" / "STICK"
    desktop.mkdir(parents=True)

    fs = ext4_image(stick, tmp_path / "stick.img")
    media = media_config(tmp_path, '["nerves-hub", "."]', mount="false")
    async with stick_and_daemon(tmp_path, fs, "ext4", system_bus, image, media) as s:
        client, devnode, log = s.client, s.devnode, s.daemon.text
        s.plug()
        await until(lambda: "waiting for it to be mounted" in log(), 30, "the wait", s.daemon)
        assert client.named("MediaAdded") == []
        subprocess.run(
            ["mount", "-t", "ext4", "-o", "ro,noload", devnode, str(desktop)], check=True
        )
        ((dev, mount_point, candidates),) = await client.wait_for("MediaAdded", log=log)
        assert (dev, mount_point, candidates) == (devnode, str(desktop), 1)
        ((rid, info),) = await client.wait_for("ArchiveAvailable", log=log)
        assert info["uuid"] == uuid and info["file"] == "content.fw"
        await client.call("Decide", "sst", [rid, "download", 0])
        await client.wait_for("ArchiveReady", log=log)
        s.pull()
        await client.wait_for("MediaRemoved", log=log)
        assert mounts_of(devnode) == [str(desktop)]
        assert not (tmp_path / "media").exists()  # nothing was mounted by the daemon
    # the daemon ended its work on the medium (and stopped): the desktop's mount stays
    assert s.mounts_after_stop == [str(desktop)]
