"""Benchmark: the daemon's update path and footprint, beside its anchors, in one run.

What it measures (issue 13's table), each against an anchor measured in the same run:

* an update, hub push -> logind ``Reboot`` (decision timeout 0, reboot delay 0): the
  daemon with the built-in applier and with ``applier = "fwup"`` (the real fwup),
  against ``curl -s URL | fwup -a -q -d IMG -t upgrade -i - -p KEY`` on the same URL,
  file server and fresh image (each side's made and synced right before it starts, the
  daemon running and joined by then); pairs in turns, each pair's order the other way
  round from the last's (curl then daemon, daemon then curl, ...), the median of the
  per-pair ratios (daemon time / curl time: 1.00 = as fast);
* the daemon's peak RSS (VmHWM, start-up included) for 64 MiB, 256 MiB and 1 GiB;
* idle RSS 30 s after start with the hub unreachable, and idle CPU over the 30 s
  after that, against ``bench/bare_service.py`` (a bare dbus-next service with the
  same libraries) started beside it;
* exec -> ``org.nerveshub.Link`` owned, daemon and bare service in turns;
* ``Decide`` -> first firmware byte sent by the file server, p50/p99 over 100 runs.

Firmware is made by the real fwup (``fwup -c`` and ``-S``) with a random root file
system, for an A/B layout whose Nerves KV lives in a U-Boot environment. The hub is
nhlink-hub-sim in this process (files sent with sendfile), logind is python-dbusmock,
on a private system bus. Without a reference fwup the firmware is made by
nhlink_devtools, the anchor runs ``nhlink-fwup`` and the ``applier = "fwup"`` rows are
left out; the output says so. Not a test: ``make bench``. ``BENCH_E2E_PAIRS`` (pairs per
update row, default 9; at most 5 for 1 GiB), ``BENCH_E2E_RUNS`` (start-up runs, default 5),
``BENCH_E2E_SIZES`` (default ``64,256,1024``), ``BENCH_DIR``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dbus_next import Message  # noqa: E402
from dbus_next.aio import MessageBus  # noqa: E402
from fwup_reference import VERSION, compile_bytecode, find_fwup, machine  # noqa: E402

from nhlink_devtools.ab_layout import AbLayout, build_ab_firmware  # noqa: E402
from nhlink_devtools.fw_builder import load_private_key  # noqa: E402
from nhlink_devtools.hubsim import HubSim  # noqa: E402
from tests.harness import LogindMock, start_system_bus  # noqa: E402
from tests.integration.daemon_helpers import DEVICE, sim_config  # noqa: E402
from tests.integration.daemon_helpers import write_config as daemon_config  # noqa: E402

NHLINK_FWUP = str(Path(sys.executable).parent / "nhlink-fwup")
FIXTURES = ROOT / "tests" / "fixtures" / "fwup"
ENV_OFFSET, ENV_COUNT, ROOTFS_A = 256, 16, 4096  # nhlink_devtools.ab_layout's layout
IDLE_S = 30.0
DAEMON_NAME = "org.nerveshub.Link"
BARE_NAME = "org.nerveshub.LinkBench"  # the bare service's, beside the daemon's
BARE_POLICY = f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><policy user="root"><allow own="{BARE_NAME}"/></policy></busconfig>
"""
DECIDE_RUNS = 100


@dataclass
class Tools:
    fwup: Path | None  # the reference; None: nhlink-fwup on both sides
    anchor: str  # the program of `curl | PROG -a`
    key_file: Path
    public_key: str
    folder: Path


@dataclass
class Row:
    label: str
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (anchor s, daemon s)
    rss_kib: int = 0
    same_image: bool | None = None


# -- firmware -----------------------------------------------------------------------


def ab_conf(layout: AbLayout, version: str, rootfs: Path) -> str:
    """An A/B fwup.conf with nhlink_devtools.ab_layout's offsets (our text)."""
    b, data = layout.rootfs_b, layout.data_offset
    meta = {"product": "nhlink-bench", "version": version, "platform": "x86_64"}
    sets = "".join(
        f'    uboot_setenv(uboot-env, "SLOT.nerves_fw_{k}", "{v}")\n' for k, v in meta.items()
    )
    sets += '    uboot_setenv(uboot-env, "SLOT.nerves_fw_uuid", "\\${FWUP_META_UUID}")\n'

    def mbr(slot: str, boot: int) -> str:
        parts = [(ROOTFS_A, layout.rootfs_blocks), (b, layout.rootfs_blocks), (data, 16384)]
        text = f"mbr mbr-{slot} {{\n"
        for i, (offset, count) in enumerate(parts):
            flag = "    boot = true\n" if i == boot else ""
            text += (
                f"  partition {i} {{\n    block-offset = {offset}\n    block-count = {count}\n"
                f"    type = 0x83\n{flag}  }}\n"
            )
        return text + "}\n"

    def upgrade(slot: str, other: str, offset: int) -> str:
        return (
            f"task upgrade.{slot} {{\n"
            f'  require-uboot-variable(uboot-env, "nerves_fw_active", "{other}")\n'
            f"  on-resource rootfs.img {{ raw_write({offset}) }}\n"
            f"  on-finish {{\n{sets.replace('SLOT', slot)}"
            f'    uboot_setenv(uboot-env, "nerves_fw_active", "{slot}")\n'
            f"    mbr_write(mbr-{slot})\n  }}\n}}\n"
        )

    return (
        f'meta-product = "nhlink-bench"\nmeta-version = "{version}"\n'
        'meta-platform = "x86_64"\nmeta-architecture = "x86_64"\n'
        'meta-author = "nhlink-dbus bench"\n'
        f'file-resource rootfs.img {{\n  host-path = "{rootfs}"\n}}\n'
        + mbr("a", 0)
        + mbr("b", 1)
        + f"uboot-environment uboot-env {{\n  block-offset = {ENV_OFFSET}\n"
        f"  block-count = {ENV_COUNT}\n}}\n"
        "task complete {\n  on-init {\n    mbr_write(mbr-a)\n    uboot_clearenv(uboot-env)\n"
        '    uboot_setenv(uboot-env, "nerves_fw_active", "a")\n'
        + sets.replace("SLOT", "a")
        + f"  }}\n  on-resource rootfs.img {{ raw_write({ROOTFS_A}) }}\n}}\n"
        + upgrade("a", "b", ROOTFS_A)
        + upgrade("b", "a", b)
    )


def make_firmware(tools: Tools, layout: AbLayout, version: str, mib: float) -> Path:
    out = tools.folder / f"fw-{version}.fw"
    rootfs = tools.folder / f"rootfs-{version}.img"
    with rootfs.open("wb") as fh:
        for _ in range(int(mib * 16)):
            fh.write(os.urandom(1 << 16))
    if tools.fwup is None:
        key = load_private_key((FIXTURES / "test-only-fwup-key.priv").read_text())
        build_ab_firmware(out, version, rootfs, key, layout=layout, compresslevel=1)
    else:
        conf = tools.folder / f"fw-{version}.conf"
        conf.write_text(ab_conf(layout, version, rootfs))
        unsigned = tools.folder / f"fw-{version}.unsigned.fw"
        subprocess.run(
            [tools.fwup, "-c", "-f", conf, "-o", unsigned], check=True, stdout=subprocess.DEVNULL
        )
        subprocess.run(
            [tools.fwup, "-S", "-s", tools.folder / "fwup-key.priv", "-i", unsigned, "-o", out],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        unsigned.unlink()
    rootfs.unlink()
    return out


def fresh_image(tools: Tools, layout: AbLayout, v1: Path, image: Path) -> None:
    """A medium as the factory leaves it: slot A holds v1."""
    image.unlink(missing_ok=True)
    with image.open("wb") as fh:
        fh.truncate(layout.image_bytes)
    subprocess.run(
        [tools.anchor, "-a", "-q", "-d", image, "-t", "complete", "-i", v1, "-p", tools.key_file],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# -- the daemon ---------------------------------------------------------------------


def write_config(
    folder: Path,
    *,
    ws_url: str,
    image: Path,
    layout: AbLayout,
    applier: str,
    tools: Tools,
    decision_timeout_ms: int = 0,
) -> Path:
    """The tests' daemon configuration, with no reboot delay and this run's key and fwup;
    in a folder of its own, so that every start has a fresh state folder (the update
    journal of a finished run would otherwise be found "applied, awaiting the reboot")."""
    return daemon_config(
        Path(tempfile.mkdtemp(prefix="daemon-", dir=folder)),
        ws_url=ws_url,
        image=image,
        layout=layout,
        applier=applier,
        public_key=tools.public_key,
        fwup_path=str(tools.fwup),
        reboot_delay_ms=0,
        extra=f"[decisions]\ntimeout_ms = {decision_timeout_ms}\n",
    )


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT)


def daemon_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "nhlink_dbus.daemon", "--config", str(config)]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def proc_status(pid: int, field_name: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise ValueError(field_name)


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far (schedstat, nanoseconds)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
            total += int(fh.read().split()[0])
    return total


async def settled(pid: int, window: float = 0.05, busy: float = 0.02, limit: float = 10) -> None:
    """Until ``pid`` used less than ``busy`` of a CPU over ``window`` seconds (at most
    ``limit`` seconds): a daemon that has joined the hub still finishes its start for a
    moment (extension joins, the first health report, loading the update path in a
    thread). An update comes to a device that is running, and the start has a row of its
    own: the pair does not start before the daemon is idle."""
    deadline = time.monotonic() + limit
    before = cpu_ns(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(window)
        now = cpu_ns(pid)
        if now - before < busy * window * 1e9:
            return
        before = now
    print(f"  (the daemon was still busy {limit:.0f} s after its join; the pair runs anyway)")


class Bus:
    """The bench's own connection to the private bus: signals it waits for."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.waiters: list[tuple[Callable[[Message], bool], asyncio.Future[float]]] = []
        bus.add_message_handler(self._on_message)

    @classmethod
    async def connect(cls, address: str) -> Bus:
        self = cls(await MessageBus(bus_address=address).connect())
        for rule in (
            "type='signal',interface='org.freedesktop.DBus.Mock',member='MethodCalled'",
            "type='signal',interface='org.freedesktop.DBus',member='NameOwnerChanged'",
            "type='signal',interface='org.nerveshub.Link1'",
        ):
            await self.call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "AddMatch",
                "s",
                [rule],
            )
        return self

    async def call(
        self, dest: str, path: str, iface: str, member: str, sig: str, body: list[object]
    ) -> Message:
        reply = await self.bus.call(
            Message(
                destination=dest,
                path=path,
                interface=iface,
                member=member,
                signature=sig,
                body=body,
            )
        )
        assert reply is not None
        return reply

    def _on_message(self, msg: Message) -> None:
        now = time.monotonic()
        for match, future in list(self.waiters):
            if not future.done() and match(msg):
                future.set_result(now)
                self.waiters.remove((match, future))

    def expect(self, match: Callable[[Message], bool]) -> asyncio.Future[float]:
        """A future set to time.monotonic() when a matching message arrives."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((match, future))
        return future


def is_reboot(msg: Message) -> bool:
    return msg.member == "MethodCalled" and bool(msg.body) and msg.body[0] == "Reboot"


def name_owned(name: str) -> Callable[[Message], bool]:
    return lambda m: m.member == "NameOwnerChanged" and m.body[0] == name and bool(m.body[2])


# -- measurements -------------------------------------------------------------------


async def curl_apply(tools: Tools, url: str, image: Path) -> float:
    shell = (
        f"curl -sf '{url}' | {tools.anchor} -a -q -d {image} -t upgrade -i - -p {tools.key_file}"
    )
    start = time.monotonic()
    proc = await asyncio.create_subprocess_shell(shell)  # the simulator runs on this loop
    if await proc.wait() != 0:
        raise SystemExit("curl | fwup failed")
    return time.monotonic() - start


async def daemon_update(sim: HubSim, bus: Bus, fw: Path) -> float:
    """Push -> Reboot seconds, for a daemon that has joined."""
    reboot = bus.expect(is_reboot)
    start = time.monotonic()
    try:
        await sim.offer_update(DEVICE, fw)
        done = await asyncio.wait_for(reboot, 600)
    finally:
        sim.clear_update(DEVICE)
    return done - start


async def update_row(
    label: str,
    tools: Tools,
    sim: HubSim,
    bus: Bus,
    env: dict[str, str],
    layout: AbLayout,
    applier: str,
    v1: Path,
    v2: Path,
    runs: int,
) -> Row:
    """Pairs of one update by ``curl | fwup`` and one by the daemon, in turns: the first
    pair curl first, the next the daemon first, and so on. The daemon is started and
    has joined before either side of its pair runs (on a device it is running when an
    update comes). Each side's last image is deleted, and its new one made and synced,
    right before that side starts writing: both sides free and take page cache the same
    way. (On this VM a run's time depends on what the page cache went through before it:
    fwup's copy into new page-cache pages took from 2 % to a third of its time, and a
    1 GiB update up to twice as long; see the README.)"""
    row = Row(label)
    folder = tools.folder
    url = (await sim.offer_update(DEVICE, v2, push=False))["firmware_url"]
    sim.clear_update(DEVICE)
    anchor_img, daemon_img = folder / "anchor.img", folder / "daemon.img"
    last_daemon_img = folder / "daemon-last.img"
    for i in range(runs):
        # The last pair's image (its page cache) is let go right before this pair's run,
        # as the anchor's is by fresh_image: not before the daemon starts.
        if daemon_img.exists():
            daemon_img.rename(last_daemon_img)
        fresh_image(tools, layout, v1, daemon_img)  # the daemon reads its KV at start
        config = write_config(
            folder, ws_url=sim.ws_url, image=daemon_img, layout=layout, applier=applier, tools=tools
        )
        proc = spawn(daemon_argv(config), env, folder / "daemon.log")
        try:
            await sim.wait_for_join(DEVICE, timeout=60)
            await settled(proc.pid)
            times: dict[str, float] = {}
            for side in ("curl", "daemon") if i % 2 == 0 else ("daemon", "curl"):
                image = anchor_img if side == "curl" else daemon_img
                if side == "daemon":
                    last_daemon_img.unlink(missing_ok=True)
                fresh_image(tools, layout, v1, image)  # the daemon's: the same as it read
                os.sync()
                if side == "curl":
                    times[side] = await curl_apply(tools, url, image)
                else:
                    times[side] = await daemon_update(sim, bus, v2)
            rss = proc_status(proc.pid, "VmHWM")
        finally:
            stop(proc)
        # The next daemon's join must not be taken for this one's.
        await sim.wait_for(lambda: None if sim.devices[DEVICE].connected else True, 60)
        row.pairs.append((times["curl"], times["daemon"]))
        row.rss_kib = max(row.rss_kib, rss)
        if i == 0:
            row.same_image = digest(anchor_img) == digest(daemon_img)
        print(
            f"  {label}: pair {i + 1}: curl {times['curl']:.2f} s, daemon {times['daemon']:.2f} s, "
            f"RSS {rss / 1024:.1f} MiB",
            flush=True,
        )
    for path in (anchor_img, daemon_img, last_daemon_img):
        path.unlink(missing_ok=True)
    return row


async def startup_and_idle(
    tools: Tools, bus: Bus, env: dict[str, str], layout: AbLayout, runs: int
) -> dict[str, object]:
    folder = tools.folder
    image = folder / "idle.img"
    with image.open("wb") as fh:
        fh.truncate(layout.image_bytes)
    # A hub that never answers: a port we hold open and never accept on.
    config = write_config(
        folder,
        ws_url="ws://127.0.0.1:9",
        image=image,
        layout=layout,
        applier="builtin",
        tools=tools,
    )
    bare = [sys.executable, str(ROOT / "bench" / "bare_service.py"), BARE_NAME]
    starts: dict[str, list[float]] = {"daemon": [], "bare": []}
    for _ in range(runs):
        for what, argv, name in (
            ("bare", bare, BARE_NAME),
            ("daemon", daemon_argv(config), DAEMON_NAME),
        ):
            owned = bus.expect(name_owned(name))
            begin = time.monotonic()
            proc = spawn(argv, env, folder / f"{what}.log")
            try:
                starts[what].append(await asyncio.wait_for(owned, 60) - begin)
            finally:
                stop(proc)
    # Idle: both at once, each under its own name.
    procs = {}
    for what, argv, name in (
        ("daemon", daemon_argv(config), DAEMON_NAME),
        ("bare", bare, BARE_NAME),
    ):
        owned = bus.expect(name_owned(name))
        procs[what] = spawn(argv, env, folder / f"{what}-idle.log")
        await asyncio.wait_for(owned, 60)
    try:
        await asyncio.sleep(IDLE_S)
        rss = {w: proc_status(p.pid, "VmRSS") for w, p in procs.items()}
        cpu0 = {w: cpu_ns(p.pid) for w, p in procs.items()}
        await asyncio.sleep(IDLE_S)
        cpu = {w: (cpu_ns(p.pid) - cpu0[w]) / 1e9 / IDLE_S for w, p in procs.items()}
    finally:
        for p in procs.values():
            stop(p)
    image.unlink()
    return {"starts": starts, "rss": rss, "cpu": cpu}


async def decide_latency(
    tools: Tools, sim: HubSim, bus: Bus, env: dict[str, str], layout: AbLayout, runs: int
) -> list[float]:
    """Decide(apply) -> first firmware byte sent, ``runs`` times on one daemon.

    The firmware is signed with a key the daemon does not have: each apply fails right
    after meta.conf, the update ends, and the next offer comes in at once.
    """
    folder = tools.folder
    image = folder / "decide.img"
    with image.open("wb") as fh:
        fh.truncate(layout.image_bytes)
    wrong = folder / "wrong-key.fw"
    key = load_private_key((FIXTURES / "test-only-wrong-key.priv").read_text())
    build_ab_firmware(wrong, "9.9.9", os.urandom(1 << 20), key, layout=layout)
    config = write_config(
        folder,
        ws_url=sim.ws_url,
        image=image,
        layout=layout,
        applier="builtin",
        tools=tools,
        decision_timeout_ms=600_000,
    )
    proc = spawn(daemon_argv(config), env, folder / "decide.log")
    latencies = []
    try:
        await sim.wait_for_join(DEVICE, timeout=60)
        await settled(proc.pid)
        for _ in range(runs):
            offered = bus.expect(lambda m: m.member == "UpdateAvailable")
            finished = bus.expect(lambda m: m.member == "UpdateFinished")
            before = len(sim.http_log)
            await sim.offer_update(DEVICE, wrong)
            await asyncio.wait_for(offered, 60)
            request_id = await _pending_id(bus)
            decided = time.monotonic()
            await bus.call(
                "org.nerveshub.Link",
                "/org/nerveshub/Link",
                "org.nerveshub.Link1",
                "Decide",
                "sst",
                [request_id, "apply", 0],
            )
            await asyncio.wait_for(finished, 60)
            first = sim.http_log[before].first_byte_at
            assert first is not None
            latencies.append(first - decided)
    finally:
        stop(proc)
        sim.clear_update(DEVICE)
        image.unlink()
    return latencies


async def _pending_id(bus: Bus) -> str:
    reply = await bus.call(
        "org.nerveshub.Link",
        "/org/nerveshub/Link",
        "org.nerveshub.Link1",
        "GetPendingRequests",
        "",
        [],
    )
    (requests,) = reply.body
    return str(requests[-1][0])


# -- the table ----------------------------------------------------------------------


def crypto_share(python: str) -> float | None:
    """MiB of resident memory that importing cryptography's Ed25519 adds to ``python``
    (with ssl already loaded, as in the daemon); None if it cannot import it."""
    code = (
        "import ssl\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0]"
        ".split()[1])\n"
        "before = rss()\n"
        "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey\n"
        "print(rss() - before)\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return int(out.stdout) / 1024 if out.returncode == 0 and out.stdout.strip() else None


def ratio(row: Row) -> float:
    return statistics.median(daemon / anchor for anchor, daemon in row.pairs)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))]


async def main() -> None:
    runs = int(os.environ.get("BENCH_E2E_RUNS", "5"))
    # One pair's ratio moves by 0.1 and more from one pair to the next on this VM (its
    # host, its page cache): the median wants more than a handful.
    pairs = int(os.environ.get("BENCH_E2E_PAIRS", "9"))
    sizes = [int(x) for x in os.environ.get("BENCH_E2E_SIZES", "64,256,1024").split(",")]
    compile_bytecode()
    fwup, origin = find_fwup()
    print("## nhlink-dbus update path and footprint (bench/bench_e2e_update.py)\n")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="nhlink-e2e-", dir=os.environ.get("BENCH_DIR")) as d:
        folder = Path(d)
        if fwup is None:
            print(
                f"NO REFERENCE FWUP: {origin}. The anchor is `curl | nhlink-fwup` (the built-in "
                'applier on both sides) and the applier = "fwup" rows are left out.'
            )
            tools = Tools(
                None,
                NHLINK_FWUP,
                FIXTURES / "fwup-key.pub",
                (FIXTURES / "fwup-key.pub").read_text().strip(),
                folder,
            )
        else:
            print(f"reference: fwup {VERSION} ({origin})")
            subprocess.run([fwup, "-g"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
            key_file = folder / "fwup-key.pub"
            tools = Tools(fwup, str(fwup), key_file, key_file.read_text().strip(), folder)
        print(
            f"{pairs} pairs per update row (1 GiB: {min(pairs, 5)}), each pair's order the "
            "other way round from the last's; the hub simulator, logind "
            "mock and bus run in the bench process; reboot delay 0, decision timeout 0\n",
            flush=True,
        )
        system = start_system_bus()
        system.add_policy("nhlink-bench-bare.conf", BARE_POLICY)
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=system.address, PYTHONUNBUFFERED="1")
        logind = LogindMock(system)
        config = sim_config()
        rows: list[Row] = []
        try:
            bus = await Bus.connect(system.address)
            async with HubSim(config) as sim:
                for mib in sizes:
                    layout = AbLayout(rootfs_blocks=((mib + 8) << 20) // 512)
                    v1 = make_firmware(tools, layout, "1.0.0", 1)
                    v2 = make_firmware(tools, layout, f"2.0.{mib}", mib)
                    os.sync()  # the new files written back now, not during a pair
                    size = f"{mib} MiB" if mib < 1024 else f"{mib // 1024} GiB"
                    kinds = ["builtin"] + (["fwup"] if tools.fwup is not None else [])
                    for applier in kinds:
                        n = pairs if mib <= 256 else min(pairs, 5)
                        label = f'{size} update, applier = "{applier}"'
                        rows.append(
                            await update_row(
                                label, tools, sim, bus, env, layout, applier, v1, v2, n
                            )
                        )
                    v1.unlink()
                    v2.unlink()
                layout = AbLayout()
                print("  start-up and idle...", flush=True)
                idle = await startup_and_idle(tools, bus, env, layout, runs)
                print(f"  Decide -> first byte, {DECIDE_RUNS} runs...", flush=True)
                latencies = await decide_latency(tools, sim, bus, env, layout, DECIDE_RUNS)
            bus.bus.disconnect()
        finally:
            logind.stop()
            system.stop()
    anchor = "`curl | fwup -a`" if tools.fwup is not None else "`curl | nhlink-fwup -a`"
    print("\n| figure | nhlink-dbus | anchor, same run | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        daemon = statistics.median(d for _a, d in row.pairs)
        curl = statistics.median(a for a, _d in row.pairs)
        same = "" if row.same_image in (None, True) else " (IMAGES DIFFER)"
        pairs = ", ".join(f"{d / a:.2f}" for a, d in row.pairs)
        print(
            f"| {row.label}, push -> Reboot | {daemon:.2f} s | {anchor} {curl:.2f} s | "
            f"**{ratio(row):.2f}** ({pairs}){same} |"
        )
    for row in rows:
        print(f"| daemon peak RSS, {row.label} | {row.rss_kib / 1024:.1f} MiB | — | — |")
    starts, rss, cpu = idle["starts"], idle["rss"], idle["cpu"]
    assert isinstance(starts, dict) and isinstance(rss, dict) and isinstance(cpu, dict)
    s_d, s_b = statistics.median(starts["daemon"]), statistics.median(starts["bare"])
    print(
        f"| idle RSS, hub unreachable, {IDLE_S:.0f} s after start | {rss['daemon'] / 1024:.1f} "
        f"MiB | bare dbus-next service {rss['bare'] / 1024:.1f} MiB | "
        f"{rss['daemon'] / rss['bare']:.2f} |"
    )
    start_ratio = statistics.median(
        d / b for d, b in zip(starts["daemon"], starts["bare"], strict=True)
    )
    print(
        f"| exec -> `org.nerveshub.Link` owned (median of {len(starts['daemon'])}) | "
        f"{s_d:.3f} s | bare service {s_b:.3f} s | {start_ratio:.2f} |"
    )
    print(
        f"| idle CPU (the {IDLE_S:.0f} s after that) | {cpu['daemon'] * 100:.3f} % | "
        f"bare service {cpu['bare'] * 100:.3f} % | — |"
    )
    print(
        f"| `Decide` -> first firmware byte sent ({len(latencies)} runs) | "
        f"p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 "
        f"{percentile(latencies, 99) * 1000:.1f} ms | — | — |"
    )
    from nhlink_dbus.fwup import signature  # noqa: PLC0415

    wheel, debian = crypto_share(sys.executable), crypto_share("/usr/bin/python3")
    note = f"signatures (meta.conf) are checked here by {signature.backend()}"
    if wheel is not None:
        note += f"; cryptography's Ed25519, the fallback, would add {wheel:.1f} MiB"
        note += " (the PyPI wheel, with its own OpenSSL)"
        if debian is not None:
            note += f", Debian 12's python3-cryptography {debian:.1f} MiB (it shares libcrypto)"
    print(f"\n{note}.")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
