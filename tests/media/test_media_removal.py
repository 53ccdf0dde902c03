"""Issue 10: a stick pulled in the middle of a copy or of an apply from it.

The scenario runs in a child process under the umockdev preload (the service, the real
udev monitor, mount and reads, in one process, with a gate in the reader that makes
"mid-way" certain): ``removal_scenario.py``. The removal is a umockdev ``remove`` uevent;
the kernel side (the ext4 image on a loop device) stays, so only the service's own
reaction can stop the copy or the apply."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.kv_store import read_kv
from nhlink_devtools.ab_layout import AbLayout
from tests.harness.umockdev import PRELOAD, ROOT
from tests.integration.archive_helpers import make_archive, running_device, sha256
from tests.integration.daemon_helpers import make_firmware, write_config
from tests.media.media_helpers import attached, ext4_image, mounts_of


def run_scenario(
    case: str, tmp_path: Path, devnode: str, image: Path, *, namespace: bool = False
) -> dict[str, Any]:
    """The scenario's JSON line. ``namespace``: in a mount namespace of its own, as
    systemd runs the service (its mounts go when its last process does)."""
    config = write_config(
        tmp_path,
        ws_url="HUB_URL",
        image=image,
        media=f'enabled = true\nmount_dir = "{tmp_path / "media"}"\nfolders = ["nerves-hub"]\n',
        extra="[decisions]\ntimeout_ms = 60000\n",
    )
    env = {**os.environ, "LD_PRELOAD": PRELOAD, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("UMOCKDEV_DIR", None)
    unshare = ["unshare", "--mount", "--propagation", "private"] if namespace else []
    done = subprocess.run(
        [
            *unshare,
            sys.executable,
            "-m",
            "tests.media.removal_scenario",
            case,
            str(tmp_path),
            devnode,
            str(config),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    expected = -signal.SIGKILL if case == "kill" else 0
    if namespace and case == "kill":
        expected = 128 + signal.SIGKILL  # unshare forks; the child's death is its status
    assert done.returncode in (expected, -signal.SIGKILL), done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def names(result: dict[str, Any]) -> list[str]:
    return [name for name, _args in result["calls"]]


def test_removal_mid_copy_leaves_no_partial_file(tmp_path: Path) -> None:
    _fw, image = running_device(tmp_path)
    stick = tmp_path / "stick"
    (stick / "nerves-hub").mkdir(parents=True)
    make_archive(stick / "nerves-hub", "content", size=6 << 20)
    with attached(ext4_image(stick, tmp_path / "stick.img")) as devnode:
        result = run_scenario("copy", tmp_path, devnode, image)
        assert mounts_of(devnode) == []
    # The copy was under way when the stick went: one chunk in, not more.
    ((name, size),) = result["mid_way"].items()
    assert name.endswith(".copy") and 0 < size < 6 << 20
    assert result["left"] == []  # nothing partial stays, nothing staged
    called = names(result)
    assert "media_added" in called and "media_removed" in called
    assert "archive_available" not in called and "archive_ready" not in called
    assert "error" not in called  # a removal is not a fault of the file
    assert not (tmp_path / "media").exists() or os.listdir(tmp_path / "media") == []


def test_removal_mid_apply_fails_cleanly_and_keeps_the_running_slot(tmp_path: Path) -> None:
    running, image = running_device(tmp_path)
    stick = tmp_path / "stick"
    (stick / "nerves-hub").mkdir(parents=True)
    update = make_firmware(tmp_path, "2.0.0", 4 << 20)
    shutil.copy(update.path, stick / "nerves-hub" / "update.fw")
    layout = AbLayout()
    before = image.read_bytes()
    with attached(ext4_image(stick, tmp_path / "stick.img")) as devnode:
        result = run_scenario("apply", tmp_path, devnode, image)
        assert mounts_of(devnode) == []
    called = names(result)
    assert called.index("media_removed") < called.index("update_finished")
    (finished,) = [args for name, args in result["calls"] if name == "update_finished"]
    assert finished[1] is False
    assert finished[2] == "reading the firmware failed: the medium was removed"
    assert result["state"] == "failed"
    assert "reboot_scheduled" not in called
    kv = read_kv(layout.kv_spec(image))
    assert kv["nerves_fw_active"] == "a"
    assert active_slot_metadata(kv)["nerves_fw_uuid"] == running.uuid
    after = image.read_bytes()
    a0, a1 = 4096 * 512, layout.rootfs_b * 512
    assert after[a0:a1] == before[a0:a1]  # the running slot was not touched


def test_a_kill_mid_copy_presents_nothing_partial_and_the_next_start_copies_again(
    tmp_path: Path,
) -> None:
    """Issue 14's kill matrix, for a copy from media: the service SIGKILLed in the middle
    of copying an archive from a stick, then started again with the stick still in."""
    _fw, image = running_device(tmp_path)
    stick = tmp_path / "stick"
    (stick / "nerves-hub").mkdir(parents=True)
    archive, uuid = make_archive(stick / "nerves-hub", "content", size=6 << 20)
    with attached(ext4_image(stick, tmp_path / "stick.img")) as devnode:
        killed = run_scenario("kill", tmp_path, devnode, image, namespace=True)
        ((name, size),) = killed["mid_way"].items()
        assert name.endswith(".copy") and 0 < size < 6 << 20  # killed one chunk in
        assert mounts_of(devnode) == []  # its mount went with its namespace
        folder = tmp_path / "archives"
        assert sorted(p.name for p in folder.iterdir()) == [name]  # the leftover, as killed
        again = run_scenario("restart", tmp_path, devnode, image, namespace=True)
        assert mounts_of(devnode) == []
    called = names(again)
    assert called.count("archive_ready") == 1 and "error" not in called
    ready = Path(again["ready"])
    # The leftover was deleted at start; the archive, copied again, is the stick's.
    assert again["left"] == [ready.name] == [f"{uuid}.fw"]
    assert sha256(ready) == sha256(archive)
