"""core/media.py: devices, names, the mount table, kinds, the medium lifecycle; and
LinkCore with media (offers from a stick, removal)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core import link, media
from nhlink_dbus.core.archive_manager import DiscardStaged, StartArchiveDownload
from nhlink_dbus.core.update_manager import ReportError, StartUpdate
from nhlink_dbus.errors import StateError
from tests.core.test_link import core, of

STICK = {
    "DEVNAME": "/dev/sdb1",
    "DEVTYPE": "partition",
    "ID_BUS": "usb",
    "ID_FS_TYPE": "vfat",
    "ID_FS_USAGE": "filesystem",
    "ID_FS_LABEL": "KIOSK",
    "MAJOR": "8",
    "MINOR": "17",
}
SYS = "/sys/devices/pci0000:00/usb1/1-1/host6/block/sdb/sdb1"


def stick(**changes: str) -> media.BlockDevice:
    props = {k: v for k, v in (STICK | changes).items() if v != ""}
    return media.BlockDevice.from_udev(SYS, props, removable=False)


# -- devices -----------------------------------------------------------------------------------


def test_a_usb_partition_with_a_file_system_is_a_medium() -> None:
    dev = stick()
    assert dev.is_medium and dev.devnum == (8, 17) and dev.name == "sdb1"
    assert stick(DEVTYPE="disk").is_medium  # a stick without a partition table


@pytest.mark.parametrize(
    ("changes", "removable"),
    [
        ({"ID_BUS": "ata"}, False),  # an internal disk
        ({"ID_FS_USAGE": "raid"}, False),
        ({"ID_FS_USAGE": "crypto", "ID_FS_TYPE": "crypto_LUKS"}, False),
        ({"ID_FS_TYPE": "", "ID_FS_USAGE": ""}, False),  # udev found no file system
        ({"ID_FS_USAGE": "", "ID_FS_TYPE": "swap"}, False),
        ({"DEVTYPE": "loop"}, False),
        ({"DEVNAME": ""}, False),
    ],
)
def test_what_is_not_a_medium(changes: dict[str, str], removable: bool) -> None:
    assert not media.BlockDevice.from_udev(
        SYS, {k: v for k, v in (STICK | changes).items() if v}, removable
    ).is_medium


def test_a_removable_disk_on_another_bus_is_a_medium() -> None:
    props = STICK | {"ID_BUS": "mmc"}
    assert media.BlockDevice.from_udev(SYS, props, removable=True).is_medium
    assert not media.BlockDevice.from_udev(SYS, props, removable=False).is_medium


def test_mount_point_names_stay_inside_the_mount_folder() -> None:
    assert stick(DEVNAME="/dev/..").name == "medium"
    assert stick(DEVNAME="/dev/disk/by-label/a b").name == "medium"
    assert stick(DEVNAME="/dev/mmcblk0p1").name == "mmcblk0p1"


def test_mount_options() -> None:
    assert media.mount_options("vfat") == "ro,nosuid,nodev,noexec"
    assert media.mount_options("ext4") == "ro,nosuid,nodev,noexec,noload"


# -- names and folders -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("app.fw", None),
        ("App Pack.FW", None),
        ("app.fw.txt", "not a .fw file"),
        ("._app.fw", "AppleDouble file"),
        (".app.fw", "hidden file"),
        ("../x.fw", "hidden file"),
        ("a/../../x.fw", "a path, not a name"),
        ("..\\x.fw", "hidden file"),
        ("a\\x.fw", "a path, not a name"),
        ("a\nb.fw", "control characters in the name"),
        ("a\x00.fw", "control characters in the name"),
    ],
)
def test_candidate_names(name: str, problem: str | None) -> None:
    assert media.name_problem(name) == problem


@given(st.text(max_size=30))
def test_a_candidate_name_is_a_plain_name(name: str) -> None:
    if media.name_problem(name) is None:
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert name not in (".", "..") and name.lower().endswith(".fw")


@pytest.mark.parametrize(
    ("folder", "ok"),
    [
        (".", True),
        ("nerves-hub", True),
        ("a/b/./c", True),
        ("", False),
        ("/media", False),
        ("..", False),
        ("a/../b", False),
        ("a\\b", False),
        ("a\tb", False),
    ],
)
def test_folders(folder: str, ok: bool) -> None:
    assert (media.folder_problem(folder) is None) == ok


@given(st.text(alphabet="ab./\\\n", max_size=12))
def test_valid_folders_never_climb(folder: str) -> None:
    if media.folder_problem(folder) is None:
        assert ".." not in media.folder_parts(folder)
        assert not folder.startswith("/")


# -- the mount table ---------------------------------------------------------------------------

MOUNTINFO = (
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "45 27 8:17 /sub /mnt/bind ro - vfat /dev/sdb1 ro\n"
    "46 27 8:17 / /media/kiosk/MY\\040STICK rw,nosuid - vfat /dev/sdb1 rw\n"
    "garbage line\n"
    "47 27 7:3 / /run/nhlink/media/loop3 ro - ext4 /dev/loop3 ro\n"
)


def test_the_desktop_mount_is_found_by_device_number() -> None:
    entries = media.parse_mountinfo(MOUNTINFO)
    assert len(entries) == 4
    found = media.find_mount(entries, stick())
    assert found is not None and found.mount_point == "/media/kiosk/MY STICK"
    assert media.find_mount(entries, stick(MAJOR="9")) is None
    by_node = stick(MAJOR="", MINOR="", DEVNAME="/dev/loop3")
    assert by_node.devnum is None
    found = media.find_mount(entries, by_node)
    assert found is not None and found.mount_point == "/run/nhlink/media/loop3"


@given(st.text(max_size=200))
def test_mountinfo_parser_never_raises(text: str) -> None:
    for entry in media.parse_mountinfo(text):
        assert isinstance(entry.devnum, tuple)


# -- kinds -------------------------------------------------------------------------------------

RUNNING = {
    "nerves_fw_product": "kiosk",
    "nerves_fw_platform": "x86_64",
    "nerves_fw_architecture": "x86_64",
}
META = {"product": "kiosk", "platform": "x86_64", "architecture": "x86_64", "uuid": "u"}


def test_classify() -> None:
    firmware = media.Kind.FIRMWARE
    assert media.classify(META, {"upgrade.a", "complete"}, RUNNING, "upgrade") == (firmware, None)
    assert media.classify(META, {"complete"}, RUNNING, "upgrade") == (media.Kind.ARCHIVE, None)
    assert media.classify(META, set(), RUNNING, "upgrade") == (media.Kind.ARCHIVE, None)
    kind, why = media.classify(META | {"platform": "rpi4"}, {"upgrade"}, RUNNING, "upgrade")
    assert kind is firmware and why is not None and "platform 'rpi4'" in why
    kind, why = media.classify({"uuid": "u"}, {"upgrade"}, RUNNING, "upgrade")
    assert why is not None and "product '(none)'" in why
    kind, why = media.classify(META, {"upgrade"}, {}, "upgrade")
    assert why is not None and "names no product" in why


# -- the lifecycle -----------------------------------------------------------------------------


def test_lifecycle_and_illegal_transitions() -> None:
    manager = media.MediaManager()
    assert manager.added(stick(ID_BUS="ata")) == []
    assert manager.added(stick()) == [media.AttachMedium(stick())]
    assert manager.added(stick()) == []  # udev and umockdev repeat themselves
    attached = media.MediumAttached(SYS, "/run/nhlink/media/sdb1", True, 2)
    assert manager.attached(attached) == [media.MediaAdded("/dev/sdb1", attached.mount_point, 2)]
    with pytest.raises(StateError):
        manager.attached(attached)
    manager.done(SYS)
    with pytest.raises(StateError):
        manager.done(SYS)
    assert manager.media[SYS].state is media.MediumState.READY
    assert manager.removed(SYS) == [
        media.DetachMedium(SYS, "/run/nhlink/media/sdb1", True),
        media.MediaRemoved("/dev/sdb1"),
    ]
    assert manager.removed(SYS) == []


def test_change_events_add_and_end_media() -> None:
    manager = media.MediaManager()
    empty_reader = stick(ID_FS_TYPE="", ID_FS_USAGE="", DEVTYPE="disk")
    assert manager.changed(empty_reader) == []  # a card reader without a card
    card = stick(DEVTYPE="disk")
    assert manager.changed(card) == [media.AttachMedium(card)]  # a card was inserted
    assert manager.changed(card) == []  # still there
    assert manager.changed(empty_reader) == [media.DetachMedium(SYS, "", False)]  # taken out


def test_a_medium_that_failed_is_removed_without_media_removed() -> None:
    manager = media.MediaManager()
    manager.added(stick())
    manager.failed(SYS)
    assert manager.removed(SYS) == [media.DetachMedium(SYS, "", False)]


# -- LinkCore with media ----------------------------------------------------------------------

FILE = media.MediaFile(SYS, "/dev/sdb1", "nerves-hub/app.fw")
FW_META = {"uuid": "new", "version": "2.0.0", "product": "kiosk"}


def attached_core(**settings: object) -> link.LinkCore:
    c = core(**settings)
    c.media_event(media.MediumAdded(stick()), now=0.0)
    c.media_event(media.MediumAttached(SYS, "/m", True, 1), now=0.0)
    return c


def test_firmware_from_a_stick_is_an_update_offer_withdrawn_when_the_stick_goes() -> None:
    c = attached_core()
    out = c.media_event(media.FirmwareFound(FILE, FW_META, 123), now=1.0)
    (ask,) = of(link.Announce, out)
    assert ask.kind == "update"  # type: ignore[attr-defined]
    info = ask.info  # type: ignore[attr-defined]
    assert (info["source"], info["device"], info["file"]) == ("removable", "/dev/sdb1", FILE.path)
    out = c.media_event(media.MediumRemovedEvent(SYS), now=2.0)
    assert link.RequestGone(ask.request_id) in out  # type: ignore[attr-defined]
    assert media.MediaRemoved("/dev/sdb1") in out
    assert c.pending_requests() == [] and c.state == "idle"


def test_applying_firmware_from_a_stick_starts_the_update_with_the_file() -> None:
    c = attached_core()
    (ask,) = of(link.Announce, c.media_event(media.FirmwareFound(FILE, FW_META, 1), now=1.0))
    out = c.decide(ask.request_id, "apply", 0, "me", now=2.0)  # type: ignore[attr-defined]
    (start,) = of(StartUpdate, out)
    assert start.offer.medium == FILE  # type: ignore[attr-defined]


def test_a_staged_archive_is_moved_on_download_and_discarded_otherwise() -> None:
    c = attached_core()
    found = media.ArchiveFound(FILE, {"uuid": "arch", "version": "1"}, 9, "/a/arch.fw.sdb1.staged")
    (ask,) = of(link.Announce, c.media_event(found, now=1.0))
    assert ask.info["source"] == "removable"  # type: ignore[attr-defined]
    rid = ask.request_id  # type: ignore[attr-defined]
    assert of(DiscardStaged, c.decide(rid, "reschedule", 100, "me", now=2.0)) == []
    c.tick(2.1)
    assert of(DiscardStaged, c.decide(rid, "ignore", 0, "me", now=3.0)) == [
        DiscardStaged("/a/arch.fw.sdb1.staged")
    ]
    # the timeout's default (ignore) discards it too
    (ask,) = of(link.Announce, c.media_event(found, now=4.0))
    out = c.tick(4.0 + 31)
    assert of(DiscardStaged, out) == [DiscardStaged("/a/arch.fw.sdb1.staged")]
    # download: the staged copy is what the fetch moves into place
    (ask,) = of(link.Announce, c.media_event(found, now=40.0))
    (start,) = of(StartArchiveDownload, c.decide(ask.request_id, "download", 0, "me", now=41.0))  # type: ignore[attr-defined]
    assert start.offer.staged == found.staged and not start.recheck  # type: ignore[attr-defined]


def test_a_card_taken_out_of_its_reader_withdraws_its_firmware() -> None:
    c = attached_core()
    (ask,) = of(link.Announce, c.media_event(media.FirmwareFound(FILE, FW_META, 1), now=1.0))
    out = c.media_event(media.MediumChanged(stick(ID_FS_TYPE="", ID_FS_USAGE="")), now=2.0)
    assert link.RequestGone(ask.request_id) in out  # type: ignore[attr-defined]
    assert media.MediaRemoved("/dev/sdb1") in out


def test_results_for_a_medium_that_is_gone_are_dropped() -> None:
    c = attached_core()
    c.media_event(media.MediumRemovedEvent(SYS), now=1.0)
    found = media.ArchiveFound(FILE, {"uuid": "arch"}, 9, "/a/x.staged")
    assert c.media_event(found, now=2.0) == [DiscardStaged("/a/x.staged")]
    assert c.media_event(media.FirmwareFound(FILE, FW_META, 1), now=2.0) == []
    assert c.media_event(media.MediumDone(SYS), now=2.0) == []


def test_a_refused_file_is_reported_by_name() -> None:
    c = attached_core()
    out = c.media_event(media.CandidateRefused(FILE, "Expecting signed firmware archive."), 1.0)
    assert of(ReportError, out) == [
        ReportError(
            "removable medium /dev/sdb1: nerves-hub/app.fw refused: "
            "Expecting signed firmware archive."
        )
    ]


def test_a_medium_that_cannot_be_read_is_reported() -> None:
    c = core()
    c.media_event(media.MediumAdded(stick()), now=0.0)
    out = c.media_event(media.MediumFailed(SYS, "/dev/sdb1: cannot mount"), now=1.0)
    assert of(ReportError, out) == [ReportError("removable medium: /dev/sdb1: cannot mount")]
    assert c.media_event(media.MediumRemovedEvent(SYS), now=2.0) == [
        media.DetachMedium(SYS, "", False)
    ]
