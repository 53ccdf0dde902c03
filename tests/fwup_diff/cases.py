"""The hand-made cases behind tests/fixtures/fwup/diff/: each is the smallest case we
found for one divergence (or guards a fix), recorded with the real fwup by
``python -m tests.fwup_diff.record NAME --case-name NAME --why TEXT``."""

from __future__ import annotations

from tests.fwup_diff.scenario import HostFile, Mode, Mutation, Scenario, StartImage, Step

TEXT = Mode(False, None, ("-n",))
FRAMED = Mode(True, None, ())
FRAMED4K = Mode(True, 4096, ())
BOTH = (TEXT, FRAMED)

CASES = {
    "on-error-error": Scenario(
        conf='task complete {\n  on-init { raw_memset(8, 2, 0x11) error("first") }\n'
        '  on-error { raw_memset(16, 1, 0x22) error("second") raw_memset(17, 1, 0x33) }\n}\n',
        files=(),
        start=StartImage(65536),
        steps=(Step("complete", "start", (TEXT, FRAMED4K)),),
    ),
    "verbose-requirements": Scenario(
        conf="uboot-environment uenv { block-offset = 16 block-count = 2 }\n"
        'task complete {\n  on-init { uboot_clearenv(uenv) uboot_setenv(uenv, "a", "1") }\n}\n'
        'task upgrade.x {\n  require-uboot-variable(uenv, "a", "2")\n  on-init { info("x") }\n}\n'
        'task upgrade.y {\n  require-uboot-variable(uenv, "a", "1")\n  '
        'require-partition-offset(0, 0)\n  on-init { info("y") }\n}\n'
        'task upgrade.z {\n  require-uboot-variable(uenv, "a", "1")\n  '
        'require-path-at-offset("/", 0)\n  on-init { info("z") }\n}\n',
        files=(),
        start=StartImage(65536),
        steps=(
            Step("complete", "start", (TEXT, FRAMED)),
            Step(
                "upgrade", "previous", (Mode(False, None, ("-n", "-v")), Mode(True, None, ("-v",)))
            ),
        ),
    ),
    "fat-attrib-failure-continues": Scenario(
        conf='task complete {\n  on-init { fat_mkfs(128, 1024) fat_touch(128, "a.txt") '
        'fat_attrib(128, "missing.txt", "R") fat_attrib(128, "a.txt", "H") }\n}\n'
        'task upgrade {\n  on-init { error("stop") }\n'
        '  on-error { fat_attrib(128, "one.txt", "R") raw_memset(20, 1, 0x44) fat_attrib(128, '
        '"two.txt", "S") }\n}\n',
        files=(),
        start=StartImage(1 << 20),
        fat_regions=((128, 1024),),
        steps=(Step("complete", "start", BOTH), Step("upgrade", "previous", BOTH)),
    ),
    "fat-setlabel-no-volume": Scenario(
        conf='task complete {\n  on-init { fat_setlabel(128, "bad label+") }\n}\n'
        'task upgrade {\n  on-init { fat_mkfs(128, 1024) fat_setlabel(128, "bad label+") }\n}\n',
        files=(),
        start=StartImage(1 << 20),
        fat_regions=((128, 1024),),
        steps=(Step("complete", "start", BOTH), Step("upgrade", "start", BOTH)),
    ),
    "fat-write-opens-first": Scenario(
        conf='file-resource big { host-path = "big.bin" }\n'
        'task complete {\n  on-resource big { fat_write(128, "big.bin") }\n}\n'
        'task upgrade {\n  on-init { fat_mkfs(128, 1024) fat_mkdir(128, "dir") }\n  on-resource '
        'big { fat_write(128, "dir") }\n}\n',
        files=(HostFile("big.bin", 100000, "random", 7),),
        start=StartImage(1 << 20),
        fat_regions=((128, 1024),),
        steps=(Step("complete", "start", BOTH), Step("upgrade", "start", BOTH)),
    ),
    "soft-end-moves": Scenario(
        conf="mbr m {\n  partition 0 {\n    block-offset = 1\n    block-count = 1\n"
        "    type = 0xc\n    expand = true\n  }\n}\n"
        'file-resource r { host-path = "r.bin" }\n'
        "task complete {\n  on-resource r { raw_write(256) }\n  on-finish { mbr_write(m) }\n}\n"
        "task upgrade {\n  on-resource r { raw_write(256) raw_write(256) }\n"
        "  on-error { mbr_write(m) }\n}\n",
        files=(HostFile("r.bin", 300000, "random", 21),),
        start=StartImage(131072),
        steps=(Step("complete", "start", BOTH), Step("upgrade", "start", BOTH)),
    ),
    # A 64 KiB FAT12 volume holds 93 clusters (47616 bytes): a file rewritten in place may use
    # the clusters it held; a write (or the zeros before it, for a hole) that does not fit
    # fails at once, with fwup's message.
    "fat-write-full": Scenario(
        conf='file-resource a { host-path = "a.bin" }\n'
        'file-resource b { host-path = "b.bin" }\n'
        'file-resource big { host-path = "big.bin" }\n'
        'file-resource s { host-path = "s.bin" }\n'
        "task complete {\n  on-init { fat_mkfs(128, 128) }\n  on-resource a { fat_write(128, "
        '"a.bin") }\n}\n'
        'task replace {\n  on-resource b { fat_write(128, "A.BIN") }\n}\n'
        'task full {\n  on-resource big { fat_write(128, "big.bin") }\n'
        "  on-error { raw_memset(0, 1, 0x55) }\n}\n"
        "task sparse {\n  on-init { fat_mkfs(128, 128) }\n  on-resource s { fat_write(128, "
        '"s.bin") }\n}\n',
        files=(
            HostFile("a.bin", 30000, "random", 31),
            HostFile("b.bin", 40000, "random", 32),
            HostFile("big.bin", 100000, "random", 33),
            HostFile("s.bin", 60000, "random", 34, holes=((8192, 40960),)),
        ),
        start=StartImage(1 << 20),
        fat_regions=((128, 128),),
        steps=(
            Step("complete", "start", BOTH),
            Step("replace", "previous", BOTH),
            Step("full", "previous", BOTH),
            Step("sparse", "start", BOTH),
        ),
    ),
    "bar-final-units": Scenario(
        conf='file-resource r { host-path = "r.bin" }\n'
        "task complete {\n  on-resource r { raw_write(4) }\n  on-finish { raw_memset(200, 3, 1) "
        "}\n}\n",
        files=(HostFile("r.bin", 20000, "random", 3),),
        start=StartImage(1 << 18),
        steps=(Step("complete", "start", (Mode(False, None, ()), FRAMED)),),
    ),
}

SIGNED_TWO = (
    'file-resource a { host-path = "a.bin" }\n'
    'file-resource b { host-path = "b.bin" }\n'
    'file-resource unused { host-path = "u.bin" }\n'
    "task complete {\n  on-resource a { raw_write(8) }\n  on-resource b { raw_write(200) }\n  "
    "on-finish { raw_memset(400, 2, 7) }\n}\n"
)
FILES = (
    HostFile("a.bin", 20000, "random", 11),
    HostFile("b.bin", 30000, "pattern", 12),
    HostFile("u.bin", 5000, "pattern", 13),
)
KEYMODES = (TEXT, FRAMED4K, Mode(True, None, ("-v",)))
INSPECT = (("-V", "-p", "fwup-key.pub"), ("-l",), ("-m", "--framing"))


def cut(where: str, entry: int, at: int, kind: str = "truncate", xor: int = 1) -> Mutation:
    return Mutation(kind, where, entry, at, xor)


def _damaged(
    mutation: Mutation,
    *,
    sign: str = "good",
    keys: tuple[str, ...] = ("good",),
    inspect: tuple[tuple[str, ...], ...] = INSPECT,
) -> Scenario:
    """SIGNED_TWO, damaged so, applied with -n, framed 4 KiB stdin and -v."""
    return Scenario(
        conf=SIGNED_TWO,
        files=FILES,
        start=StartImage(1 << 19),
        sign=sign,
        keys=keys,
        mutation=mutation,
        steps=(Step("complete", "start", KEYMODES),),
        inspect=inspect,
    )


CASES |= {
    "zip-cut-before-signature": _damaged(cut("any", 0, 5)),
    "zip-cut-in-local-header": _damaged(cut("header", 2, 30000)),
    "zip-signature-cut": _damaged(cut("data", 0, 40000)),
    "zip-meta-conf-damaged": _damaged(cut("data", 1, 30000, "flip", 0x40)),
    "zip-meta-conf-damaged-no-key": _damaged(
        cut("data", 1, 30000, "flip", 0x40), keys=(), inspect=(("-V",), ("-m",))
    ),
    "zip-meta-conf-cut": _damaged(cut("data", 1, 20000)),
    "zip-deflate-error": _damaged(cut("data", 2, 0, "flip", 0x06)),
    "zip-unused-resource-damaged": _damaged(cut("data", 4, 30000, "flip", 0x5A)),
    "zip-used-resource-crc": _damaged(cut("data", 2, 30000, "flip", 0x01)),
    "zip-cut-in-resource-data": _damaged(cut("data", 2, 20000)),
    "zip-cut-after-last-entry": _damaged(cut("tail", 0, 30000)),
    "zip-cut-in-last-descriptor": _damaged(cut("tail", 0, 1000)),
    "zip-signature-descriptor-damaged": _damaged(
        cut("descriptor", 0, 0, "flip", 0x01),
        keys=(),
        inspect=(("-V",), ("-l",), ("-m", "--framing")),
    ),
    "verify-from-stdin": Scenario(
        conf=SIGNED_TWO,
        files=FILES,
        start=StartImage(1 << 19),
        sign="good",
        steps=(),
        inspect=(
            ("-V", "<stdin"),
            ("-V", "--framing", "<stdin"),
            ("-l", "<stdin"),
            ("-m", "<stdin"),
        ),
    ),
    "fat-extended-characters": Scenario(
        conf='file-resource a { host-path = "a.bin" }\n'
        "task complete {\n"
        '  on-init { fat_mkfs(128, 2048) fat_touch(128, "émigré.txt") fat_mkdir(128, "Ünï") '
        'fat_touch(128, "Ünï/ÀB.TXT") fat_mkdir(128, "très long dossier") }\n'
        '  on-resource a { fat_write(128, "très long dossier/naïve.bin") }\n'
        '  on-finish { fat_mv(128, "émigré.txt", "Ünï/é.t") fat_cp(128, "Ünï/ÀB.TXT", "ç") '
        'fat_touch(128, "ÉMIGRÉ.TXT") fat_rm(128, "Ünï/ÀB.TXT") }\n}\n'
        "task upgrade {\n"
        '  require-fat-file-exists(128, "ünï/é.T")\n'
        '  on-init { fat_mv!(128, "ç", "Ünï/é.t") fat_attrib(128, "ÉMIGRÉ.TXT", "R") }\n}\n',
        files=(HostFile("a.bin", 3000, "random", 21),),
        start=StartImage(1 << 21),
        fat_regions=((128, 2048),),
        steps=(Step("complete", "start", BOTH), Step("upgrade", "previous", BOTH)),
    ),
    "zip-not-a-zip-list": Scenario(
        conf=SIGNED_TWO,
        files=FILES,
        start=StartImage(1 << 19),
        sign="none",
        keys=(),
        mutation=cut("any", 0, 0, "flip", 0x01),
        steps=(Step("complete", "start", (TEXT,)),),
        inspect=(("-l",), ("-m", "--framing"), ("-V",)),
    ),
    "uboot-recover-in-on-error": Scenario(
        conf="uboot-environment uenv { block-offset = 16 block-count = 2 }\n"
        "uboot-environment redund { block-offset = 32 block-count = 2 block-offset-redund = 34 }\n"
        "task complete {\n  on-init { uboot_clearenv(redund) raw_memset(32, 2, 0) "
        'uboot_setenv(redund, "a", "1") error("main") }\n'
        "  on-error { uboot_recover(uenv) }\n}\n"
        'task upgrade {\n  on-init { uboot_clearenv(redund) uboot_setenv(redund, "a", "1") '
        "raw_memset(34, 1, 0x55) }\n"
        '  on-finish { error("main") }\n  on-error { uboot_setenv(redund, "b", "2") }\n}\n',
        files=(),
        start=StartImage(1 << 16),
        steps=(Step("complete", "start", BOTH), Step("upgrade", "start", BOTH)),
    ),
}
