"""Real file-system images for the media tests, attached to loop devices the tests own.

ext4 images are built from a folder (``mkfs.ext4 -d``: symlinks and all, no mount
needed); FAT images with ``mkfs.vfat`` and mtools. Loop devices are shared with other
work on the machine: :func:`attached` takes a free one (``losetup -f --show``),
read-only, and always undoes what was done with it (a mount left by a failed test
included) and detaches it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nhlink_dbus.core.media import parse_mountinfo
from nhlink_devtools.hubsim import HubSim
from tests.harness import PrivateSystemBus, system_bus_connection
from tests.harness.link_client import LinkClient
from tests.harness.umockdev import UdevDriver, usb_stick
from tests.integration.archive_helpers import daemon_on_bus
from tests.integration.daemon_helpers import Daemon, sim_config


def ext4_image(source: Path, image: Path, size_mb: int = 32) -> Path:
    with image.open("wb") as fh:
        fh.truncate(size_mb << 20)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", str(source), str(image)],
        check=True,
        capture_output=True,
    )
    return image


def fat_image(files: dict[str, Path], image: Path, size_mb: int = 32) -> Path:
    """A FAT image holding ``files`` ("folder/name" → local file)."""
    with image.open("wb") as fh:
        fh.truncate(size_mb << 20)
    subprocess.run(["mkfs.vfat", "-n", "STICK", str(image)], check=True, capture_output=True)
    env = {"PATH": "/usr/bin:/bin", "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"}
    made: set[str] = set()
    for target, local in files.items():
        folder = target.rpartition("/")[0]
        if folder and folder not in made:
            subprocess.run(["mmd", "-i", str(image), f"::/{folder}"], check=True, env=env)
            made.add(folder)
        subprocess.run(["mcopy", "-i", str(image), str(local), f"::/{target}"], check=True, env=env)
    return image


def kernel_mounts(fs_type: str) -> bool:
    """Whether this kernel can mount ``fs_type`` now (vfat cannot here)."""
    text = Path("/proc/filesystems").read_text()
    return any(line.split()[-1] == fs_type for line in text.splitlines() if line.strip())


def mounts_of(devnode: str) -> list[str]:
    """Mount points of ``devnode`` in this process's mount table."""
    entries = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    return [e.mount_point for e in entries if e.source == devnode]


def mount_options(mount_point: str) -> set[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if fields[4] == mount_point:
            return set(fields[5].split(","))
    return set()


@contextlib.contextmanager
def attached(image: Path) -> Iterator[str]:
    """A read-only loop device of ``image``; undone (unmounted, detached) at the end."""
    devnode = subprocess.run(
        ["losetup", "-f", "--show", "-r", str(image)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        yield devnode
    finally:
        for mount_point in mounts_of(devnode):
            subprocess.run(["umount", "-l", mount_point], check=False)
        subprocess.run(["losetup", "-d", devnode], check=False)


def have_tools() -> None:
    missing = [t for t in ("losetup", "mkfs.ext4", "mkfs.vfat", "mcopy") if not shutil.which(t)]
    assert not missing, f"missing tools (make setup installs them): {missing}"


@dataclass
class Stick:
    """A USB stick record over a loop device, and the daemon that watches for it."""

    devnode: str
    record: str
    partition: str
    udev: UdevDriver
    client: LinkClient
    daemon: Daemon
    sim: HubSim
    mounts_after_stop: list[str] = field(default_factory=list)

    def plug(self) -> None:
        self.udev.add(self.record)

    def pull(self) -> None:
        self.udev.remove(self.partition)
        self.udev.remove(self.partition.rsplit("/", 1)[0])  # and its disk


@contextlib.asynccontextmanager
async def stick_and_daemon(
    folder: Path,
    fs_image: Path,
    fs_type: str,
    bus: PrivateSystemBus,
    device_image: Path,
    media: str,
) -> AsyncIterator[Stick]:
    """``fs_image`` on a loop device, its USB record in a umockdev test bed (not plugged
    yet: :meth:`Stick.plug`), and the daemon under that test bed on ``bus`` with
    nhlink-hub-sim. ``mounts_after_stop``: the stick's mounts once the daemon stopped."""
    with attached(fs_image) as devnode:
        record, partition = usb_stick(devnode, fs_type)
        udev = UdevDriver(folder)
        try:
            async with HubSim(sim_config()) as sim, system_bus_connection() as connection:
                client = await LinkClient(connection).start()
                async with daemon_on_bus(
                    folder, bus, client, sim, device_image, media=media, env=udev.env()
                ) as daemon:
                    stick = Stick(devnode, record, partition, udev, client, daemon, sim)
                    yield stick
                stick.mounts_after_stop = mounts_of(devnode)
        finally:
            udev.close()
