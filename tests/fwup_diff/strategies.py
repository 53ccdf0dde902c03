"""Hypothesis strategies for differential cases: fwup.conf files, resources, images, runs.

What a case may hold (each drawn, most of them rarely): raw_write of random, zero,
repetitive, empty, odd-sized and sparse resources (holes, a final hole), ``contents``
resources, raw_memset, trim, MBR (partitions, boot flag, signature, bootstrap code, an
expanding last partition, extended partitions) and GPT, U-Boot environments (plain and
redundant: clearenv, setenv, unsetenv, recover; values that overflow), FAT volumes
(mkfs, write, mv, mv!, rm, rm!, cp within and across volumes, mkdir, setlabel, touch,
attrib), info() and error(), every require-* condition fwup knows, on-init, on-resource,
on-finish and on-error handlers, several tasks sharing a prefix, global
``require-fwup-version``; archives signed or not, with the right key, the wrong one or
both given; archives cut short or with one byte damaged; and a second step applied on the
image the real fwup left after the first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from hypothesis import strategies as st

from tests.fwup_diff.scenario import (
    HOLE_UNIT,
    KEYS,
    HostFile,
    Mode,
    Mutation,
    Scenario,
    StartImage,
    Step,
)

SIZES = (0, 1, 2, 100, 511, 512, 513, 1000, 1536, 4095, 4096, 4097, 8192, 16383, 16384)
SIZES_BIG = (16385, 32768, 65535, 65536, 65537, 100000, 131072, 131073, 200000)
FAT_NAMES = (
    "a.txt",
    "B.TXT",
    "Mixed.Txt",
    "long file name.text",
    "noext",
    "UPPER",
    "x",
    "name.with.dots.txt",
    "12345678.123",
    "123456789.1234",
    "dir/a.txt",
    "dir/Sub/deep.bin",
    "dir",
    "dir/Sub",
    "zImage",
    "EFI/BOOT/grubenv",
    "émigré.txt",
    "ÉMIGRÉ.TXT",
    "naïve long name.txt",
    "Ünï",
    "Ünï/é.t",
    "sp ace",
)
UBOOT_NAMES = ("a", "nerves_fw_active", "bootcmd", "x.y", "LONG_NAME_0123456789", "k")
UBOOT_VALUES = ("a", "b", "", "value with spaces", "0x1000", "c" * 300, "d" * 2000)
MESSAGES = ("hello", "", "two words", "ümlaut ✓", "100% done", "tab\\there", 'q\\"uote')
RESOURCE_NAMES = ("r0", "rootfs.img", "boot-b", "zImage", "x", "data_1", "/abs/extra")
MUTATION_CHANCE = 0.15  # of an archive being cut or damaged after it is made
LABELS = ("BOOT", "boot", "A-LABEL", "TOOLONGLABEL12", "", "has space", "ümlaut")


_PERMILLE = st.integers(0, 999)


@functools.cache
def _index(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, n - 1)  # built once per size: drawing stays cheap


@dataclass
class _Layout:
    blocks: int  # size of the starting image in 512-byte blocks
    envs: dict[str, int] = field(default_factory=dict)  # name -> block count
    fats: list[tuple[int, int]] = field(default_factory=list)
    mbrs: list[str] = field(default_factory=list)
    gpts: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)


def _q(text: str) -> str:
    return f'"{text}"'


class _Builder:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def pick(self, options: tuple[object, ...] | list[object]) -> object:
        return options[self.draw(_index(len(options)))]

    def chance(self, p: float) -> bool:
        return self.draw(_PERMILLE) < p * 1000

    def block(self, lay: _Layout) -> int:
        """A block offset: usually inside the image, sometimes past its end."""
        if self.chance(0.1):
            return lay.blocks + self.draw(st.integers(0, 64))
        return self.draw(st.integers(0, max(0, lay.blocks - 1)))

    # -- resources -------------------------------------------------------------------

    def host_file(self, name: str) -> HostFile:
        kind = self.pick(("random", "random", "zeros", "pattern", "sparse"))
        sizes = SIZES + SIZES_BIG if self.chance(0.4) else SIZES
        size = int(self.pick(sizes))  # type: ignore[call-overload]
        if self.chance(0.1):
            # zeros, pattern: inflate to far more than their 16 KiB input reads
            # (libarchive's 256 KiB steps); random: with a narrow progress range (below),
            # large enough for our reader to hand several reads over at once.
            size = int(self.pick((600000, 1 << 20)))  # type: ignore[call-overload]
        seed = self.draw(st.integers(0, 2**16))
        if kind != "sparse":
            return HostFile(name, size, str(kind), seed)
        units = self.draw(st.integers(1, 12))
        holes = []
        for unit in range(units):
            if self.chance(0.5):
                holes.append((unit * HOLE_UNIT, HOLE_UNIT))
        tail = self.draw(st.sampled_from((0, 1, 100, 511, 512, 2048)))
        size = units * HOLE_UNIT + tail
        return HostFile(name, size, "random", seed, holes=tuple(holes))

    # -- the parts of a config ---------------------------------------------------------

    def uboot_env(self, name: str, lay: _Layout, offset: int) -> str:
        count = int(self.pick((1, 2, 8, 16)))  # type: ignore[call-overload]
        lay.envs[name] = count
        lines = [f"block-offset = {offset}", f"block-count = {count}"]
        if self.chance(0.4):
            lines.append(f"block-offset-redund = {offset + count}")
        return f"uboot-environment {name} {{\n  " + "\n  ".join(lines) + "\n}\n"

    def mbr(self, name: str, lay: _Layout) -> str:
        lines = []
        if self.chance(0.2):
            lines.append(f"signature = 0x{self.draw(st.integers(0, 2**32 - 1)):08x}")
        if self.chance(0.1):
            code = self.draw(st.binary(min_size=440, max_size=440)).hex()
            lines.append(f"bootstrap-code = {_q(code)}")
        count = self.draw(st.integers(1, 4))
        offset = 1 + self.draw(st.integers(0, 63))
        extended = count == 4 and self.chance(0.3)
        for n in range(count):
            size = self.draw(st.integers(1, max(1, lay.blocks // 4)))
            kind = int(self.pick((0x0C, 0x83, 0x01, 0x06, 0xEF, 0)))  # type: ignore[call-overload]
            body = [f"block-offset = {offset}", f"block-count = {size}", f"type = 0x{kind:x}"]
            if n == 3 and extended:
                body = [f"block-offset = {offset}", "type = 0xf"]
            if self.chance(0.2):
                body.append("boot = true")
            if n == count - 1 and not extended and self.chance(0.2):
                body.append("expand = true")
            lines.append(f"partition {n} {{\n    " + "\n    ".join(body) + "\n  }")
            offset += size + self.draw(st.integers(0, 8))
        if extended:
            for n in range(4, 4 + self.draw(st.integers(1, 3))):
                size = self.draw(st.integers(1, 64))
                offset += 2
                lines.append(
                    f"partition {n} {{\n    block-offset = {offset}\n    block-count = {size}\n"
                    "    type = 0x83\n  }"
                )
                offset += size
        lay.mbrs.append(name)
        return f"mbr {name} {{\n  " + "\n  ".join(lines) + "\n}\n"

    def uuid(self) -> str:
        raw = self.draw(st.binary(min_size=16, max_size=16)).hex()
        return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"

    def gpt(self, name: str, lay: _Layout) -> str:
        lines = [f"guid = {self.uuid()}"]
        offset = 64
        count = self.draw(st.integers(1, 4))
        for n in range(count):
            size = self.draw(st.integers(1, max(1, lay.blocks // 8)))
            body = [
                f"block-offset = {offset}",
                f"block-count = {size}",
                f"type = {self.pick(('c12a7328-f81f-11d2-ba4b-00a0c93ec93b', self.uuid()))}",
                f"guid = {self.uuid()}",
            ]
            if self.chance(0.6):
                body.append(f"name = {_q(str(self.pick(('boot', 'rootfs.a', '', 'ünï'))))}")
            if self.chance(0.2):
                body.append("boot = true")
            if self.chance(0.2):
                body.append(f"flags = 0x{self.draw(st.integers(0, 2**64 - 1)):x}")
            if n == count - 1 and self.chance(0.2):
                body.append("expand = true")
            lines.append(f"partition {n} {{\n    " + "\n    ".join(body) + "\n  }")
            offset += size
        lay.gpts.append(name)
        return f"gpt {name} {{\n  " + "\n  ".join(lines) + "\n}\n"

    # -- actions -------------------------------------------------------------------------

    def fat_path(self) -> str:
        return str(self.pick(FAT_NAMES))

    def action(self, lay: _Layout, event: str) -> str:
        kinds = ["raw_memset", "info", "trim"]
        if event != "on-error":
            kinds.append("error")
        if lay.mbrs:
            kinds += ["mbr_write"] * 2
        if lay.gpts:
            kinds += ["gpt_write"] * 2
        if lay.envs:
            kinds += ["uboot_setenv"] * 4 + ["uboot_unsetenv", "uboot_clearenv", "uboot_recover"]
        if lay.fats:
            kinds += ["fat_mkfs", "fat_mkdir", "fat_touch", "fat_mv", "fat_rm", "fat_cp"] * 2
            kinds += ["fat_setlabel", "fat_attrib", "fat_mv!", "fat_rm!"]
        kind = str(self.pick(kinds))
        if kind == "error" and not self.chance(0.3):
            kind = "info"
        if kind == "raw_memset":
            count = self.draw(st.integers(1, 64))
            return f"raw_memset({self.block(lay)}, {count}, {self.draw(st.integers(0, 255))})"
        if kind in ("info", "error"):
            return f"{kind}({_q(str(self.pick(MESSAGES)))})"
        if kind == "trim":
            return f"trim({self.block(lay)}, {self.draw(st.integers(1, 128))})"
        if kind == "mbr_write":
            return f"mbr_write({self.pick(lay.mbrs)})"
        if kind == "gpt_write":
            return f"gpt_write({self.pick(lay.gpts)})"
        if kind.startswith("uboot_"):
            env = str(self.pick(sorted(lay.envs)))
            if kind == "uboot_setenv":
                name, value = self.pick(UBOOT_NAMES), self.pick(UBOOT_VALUES)
                return f"uboot_setenv({env}, {_q(str(name))}, {_q(str(value))})"
            if kind == "uboot_unsetenv":
                return f"uboot_unsetenv({env}, {_q(str(self.pick(UBOOT_NAMES)))})"
            return f"{kind}({env})"
        offset, count = self.pick(lay.fats)  # type: ignore[misc]
        if kind == "fat_mkfs":
            return f"fat_mkfs({offset}, {count})"
        if kind == "fat_setlabel":
            return f"fat_setlabel({offset}, {_q(str(self.pick(LABELS)))})"
        if kind == "fat_attrib":
            attrib = self.pick(("R", "H", "S", "RHS", "", "rh", "s"))
            return f"fat_attrib({offset}, {_q(self.fat_path())}, {_q(str(attrib))})"
        if kind in ("fat_mv", "fat_mv!", "fat_cp"):
            a, b = _q(self.fat_path()), _q(self.fat_path())
            if kind == "fat_cp" and len(lay.fats) > 1 and self.chance(0.5):
                other = self.pick(lay.fats)[0]  # type: ignore[index]
                return f"fat_cp({offset}, {a}, {other}, {b})"
            return f"{kind}({offset}, {a}, {b})"
        return f"{kind}({offset}, {_q(self.fat_path())})"

    def resource_action(self, lay: _Layout, resource: str) -> str:
        if lay.fats and self.chance(0.4):
            offset = self.pick(lay.fats)[0]  # type: ignore[index]
            if self.chance(0.15):
                return f"fat_write({offset})"
            return f"fat_write({offset}, {_q(self.fat_path())})"
        return f"raw_write({self.block(lay)})"

    def requirement(self, lay: _Layout) -> str:
        kinds = ["partition", "path-on-device", "path-at-offset", "execute"]
        if lay.envs:
            kinds += ["uboot"] * 6
        if lay.fats:
            kinds += ["fat-exists"] * 3 + ["fat-match"] * 2
        kind = self.pick(kinds)
        if kind == "uboot":
            env = self.pick(sorted(lay.envs))
            name, value = _q(str(self.pick(UBOOT_NAMES))), _q(str(self.pick(UBOOT_VALUES[:5])))
            return f"require-uboot-variable({env}, {name}, {value})"
        if kind == "fat-exists":
            return f"require-fat-file-exists({self.pick(lay.fats)[0]}, {_q(self.fat_path())})"  # type: ignore[index]
        if kind == "fat-match":
            pattern = _q(str(self.pick(("a", "hello", "", "\\x00"))))
            offset = self.pick(lay.fats)[0]  # type: ignore[index]
            return f"require-fat-file-match({offset}, {_q(self.fat_path())}, {pattern})"
        if kind == "partition":
            n, block = self.draw(st.integers(0, 3)), self.draw(st.integers(0, 80))
            return f"require-partition-offset({n}, {block})"
        if kind == "path-on-device":
            return 'require-path-on-device("/", "/dev/nonexistent-disk1")'
        if kind == "path-at-offset":
            return f'require-path-at-offset("/", {self.draw(st.integers(0, 4096))})'
        return 'require-execute("true")'

    def task(self, name: str, lay: _Layout, resources: list[str], requires: int) -> str:
        body = [self.requirement(lay) for _ in range(requires)]
        for event in ("on-init", "on-finish", "on-error"):
            n = self.draw(st.integers(0, 3 if event == "on-init" else 2))
            if n:
                actions = " ".join(self.action(lay, event) for _ in range(n))
                body.append(f"{event} {{ {actions} }}")
        for resource in resources:
            if not self.chance(0.8):
                continue
            actions = [self.resource_action(lay, resource)]
            if self.chance(0.08):
                actions.append(self.resource_action(lay, resource))  # "called twice"
            if self.chance(0.1):
                actions.append(self.action(lay, "on-resource"))
            body.append(f"on-resource {_q(resource)} {{ {' '.join(actions)} }}")
        return f"task {name} {{\n  " + "\n  ".join(body) + "\n}\n"

    # -- runs ------------------------------------------------------------------------

    def modes(self) -> tuple[Mode, ...]:
        text_opts = self.pick((("-n",),) * 4 + (("-q",), (), ("-n", "-v"), ("-q", "-v")))
        framed_opts: tuple[str, ...] = ("-v",) if self.chance(0.2) else ()
        if self.chance(0.1):
            framed_opts += ("-q",)
        if self.chance(0.05):
            framed_opts += ("--progress-low", "10", "--progress-high", "90")
        elif self.chance(0.1):
            # A percent is then a large share of the data: nhlink-fwup's reader groups
            # reads for a raw_write (fw_archive.ZipStreamReader.bulk_limit).
            high = str(self.pick(("1", "2", "3")))
            framed_opts += ("--progress-low", "0", "--progress-high", high)
        chunk = self.pick((None, None, 4096, 16384, 65536, 1000, 777, 1 << 20))
        text_chunk = None if self.chance(0.85) else 4096
        return (
            Mode(False, text_chunk, tuple(text_opts)),  # type: ignore[arg-type]
            Mode(True, chunk, framed_opts),  # type: ignore[arg-type]
        )

    def mutation(self) -> Mutation | None:
        if not self.chance(MUTATION_CHANCE):
            return None
        return Mutation(
            str(self.pick(("truncate", "flip", "flip"))),
            str(self.pick(("any", "header", "data", "data", "descriptor", "tail"))),
            self.draw(st.integers(0, 7)),
            self.draw(st.integers(0, 65535)),
            self.draw(st.integers(1, 255)),
        )

    def scenario(self) -> Scenario:
        blocks = int(self.pick((256, 1024, 2048, 2048, 4096, 8192)))  # type: ignore[call-overload]
        lay = _Layout(blocks)
        parts: list[str] = []
        files: list[HostFile] = []
        if self.chance(0.15):
            version = self.pick(("0.1.0", "1.0.0", "1.15.9", "1.16.0"))  # newer: -c refuses
            parts.append(f"require-fwup-version = {_q(str(version))}")
        if self.chance(0.3):
            parts.append(f"meta-product = {_q('product ' + str(self.pick(MESSAGES)))}")
            parts.append('meta-version = "1.2.3"')
        if self.chance(0.45):
            parts.append(self.uboot_env("uenv", lay, int(self.pick((16, 32, 40)))))  # type: ignore[call-overload]
        fat_regions: list[tuple[int, int]] = []
        if self.chance(0.4):
            for _ in range(1 + int(self.chance(0.25))):
                offset = (fat_regions[-1][0] + fat_regions[-1][1]) if fat_regions else 128
                count = int(self.pick((16, 64, 128, 300, 1000, 2048, 4000)))  # type: ignore[call-overload]
                fat_regions.append((offset, count))
            lay.fats = list(fat_regions)
        if self.chance(0.3):
            parts.append(self.mbr("mbr_a", lay))
            if self.chance(0.2):
                parts.append(self.mbr("mbr_b", lay))
        if self.chance(0.15):
            parts.append(self.gpt("gpt_a", lay))
        names = self.draw(st.lists(st.sampled_from(RESOURCE_NAMES), max_size=4, unique=True))
        for i, name in enumerate(names):
            if self.chance(0.15):
                text = str(self.pick(("hello\\n", "", "a" * 700, "ümlaut")))
                parts.append(f"file-resource {_q(name)} {{ contents = {_q(text)} }}")
                continue
            host = self.host_file(f"host{i}.bin")
            files.append(host)
            parts.append(f"file-resource {_q(name)} {{ host-path = {_q(host.name)} }}")
        lay.resources = list(names)
        # on-resource names a resource by its name; absolute-path ones included.
        complete_reqs = 1 if self.chance(0.1) else 0
        parts.append(self.task("complete", lay, names, complete_reqs))
        steps = [Step(str(self.pick(("complete", "complete", "comp", "nosuch"))), "start", ())]
        if self.chance(0.4):
            for suffix in self.draw(
                st.lists(
                    st.sampled_from((".a", ".b", ".c", "")), min_size=1, max_size=3, unique=True
                )
            ):
                parts.append(
                    self.task(f"upgrade{suffix}", lay, names, self.draw(st.integers(0, 2)))
                )
            steps.append(
                Step(str(self.pick(("upgrade", "upgrade.a", "upgrade.b"))), "previous", ())
            )
        steps = [Step(s.task, s.start, self.modes()) for s in steps]
        start = StartImage(blocks * 512)
        if self.chance(0.2):
            fills = tuple(
                (
                    self.block(lay) * 512,
                    self.draw(st.integers(1, 4096)),
                    self.draw(st.integers(0, 99)),
                )
                for _ in range(self.draw(st.integers(1, 3)))
            )
            start = StartImage(blocks * 512, fills)
        elif self.chance(0.05):
            start = StartImage(0, absent=True)
        sign = str(self.pick(("none", "good", "good", "wrong")))
        keys = self.pick(((), ("good",), ("good",), ("wrong",), ("wrong", "good")))
        inspect: list[tuple[str, ...]] = []
        if self.chance(0.3):
            command = self.pick(("-V", "-l", "-m"))
            extra = ("--framing",) if self.chance(0.5) else ()
            key_args = tuple(a for k in keys for a in ("-p", KEYS[k][0].name))  # type: ignore[union-attr]
            # "<stdin": the archive on stdin (framed with --framing) instead of -i FILE.
            source = ("<stdin",) if self.chance(0.3) else ()
            inspect.append((str(command), *extra, *key_args, *source))
        return Scenario(
            conf="\n".join(parts) + "\n",
            files=tuple(files),
            start=start,
            steps=tuple(steps),
            sign=sign,
            keys=tuple(keys),  # type: ignore[arg-type]
            mutation=self.mutation(),
            fat_regions=tuple(fat_regions),
            inspect=tuple(inspect),
        )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    return _Builder(draw).scenario()
