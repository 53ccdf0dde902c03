"""fwup's ``meta-nickname``: two words naming a firmware's ``meta-uuid``.

fwup 1.16 prints ``meta-nickname`` after ``meta-uuid`` in ``fwup -m``. It is
derived from the same BLAKE2b-256 hash as the UUID (see
``fixtures/fwup/EXPECT.md``), and only from its first two bytes:

    nickname = WORDS[h[0]] + "-" + WORDS[h[1]]

``WORDS`` is fwup's fixed list of 256 English words. fwup stores it packed as
rows of five words of 3, 4, 5, 6 and 7 letters (index ``i`` is word ``i % 5``
of row ``i // 5``; the last row holds only ``"zoo"``); here it is a plain
tuple in the same order. With 8 bits per word the nickname carries 16 bits of
the hash: it is a human aid for noticing that firmware changed, not an
identifier.

Sources: fwup pull request #270 ("Add a simple two-word nickname for UUIDs",
two words from a 256-word list); the word table and index rule as copied
into nerves_motd (``Word34567``, ``create_wordlist.c``). Checked against every
pair recorded from real fwup 1.16.0 in our fixtures (simple/fat/ab.fw) and the
three UUID/nickname pairs from fwup's own unit tests quoted by nerves_motd.
"""

from __future__ import annotations

__all__ = ["WORDS", "nickname"]

# 256 words; the comment gives the index of each row's first word.
# fmt: off
WORDS: tuple[str, ...] = (
    "act", "able", "about", "absent", "abandon",  # 0
    "add", "away", "aisle", "advice", "address",  # 5
    "aim", "best", "anger", "annual", "analyst",  # 10
    "all", "bone", "armor", "assume", "apology",  # 15
    "arm", "cake", "beach", "barrel", "average",  # 20
    "ask", "chat", "bless", "bitter", "bargain",  # 25
    "bar", "club", "brick", "bronze", "blanket",  # 30
    "bid", "corn", "cabin", "camera", "capital",  # 35
    "boy", "dash", "chalk", "casual", "certain",  # 40
    "can", "dice", "civil", "cherry", "coconut",  # 45
    "cat", "drip", "cloud", "column", "conduct",  # 50
    "cup", "east", "craft", "credit", "crucial",  # 55
    "day", "fall", "curve", "debris", "cushion",  # 60
    "dry", "fine", "dream", "depend", "despair",  # 65
    "egg", "foil", "earth", "dinner", "dilemma",  # 70
    "era", "gain", "entry", "dragon", "dynamic",  # 75
    "fan", "glad", "exist", "energy", "emotion",  # 80
    "few", "grit", "field", "estate", "essence",  # 85
    "fix", "head", "focus", "expire", "exhibit",  # 90
    "fog", "hood", "gauge", "finger", "fatigue",  # 95
    "fox", "idea", "glove", "fossil", "forward",  # 100
    "gap", "jump", "grunt", "garlic", "genuine",  # 105
    "hat", "kiwi", "hello", "guitar", "gravity",  # 110
    "hip", "lazy", "inner", "horror", "illness",  # 115
    "ice", "link", "labor", "indoor", "initial",  # 120
    "job", "loop", "light", "invest", "jealous",  # 125
    "key", "math", "maple", "laptop", "lecture",  # 130
    "kid", "mind", "mimic", "lonely", "lottery",  # 135
    "lab", "name", "nasty", "margin", "mention",  # 140
    "mad", "nose", "offer", "middle", "monitor",  # 145
    "mix", "open", "owner", "motion", "network",  # 150
    "net", "pass", "piano", "nephew", "observe",  # 155
    "nut", "plug", "power", "online", "ostrich",  # 160
    "oak", "pulp", "purse", "palace", "peasant",  # 165
    "oil", "ramp", "ready", "phrase", "popular",  # 170
    "one", "ring", "round", "praise", "present",  # 175
    "pen", "safe", "scrap", "reason", "program",  # 180
    "pig", "seed", "shock", "relief", "pudding",  # 185
    "raw", "sign", "skill", "resist", "raccoon",  # 190
    "rug", "slot", "snack", "ripple", "release",  # 195
    "run", "soon", "spawn", "salute", "satisfy",  # 200
    "say", "step", "spray", "select", "session",  # 205
    "shy", "tape", "still", "silver", "slender",  # 210
    "spy", "text", "super", "sphere", "stomach",  # 215
    "tag", "tiny", "table", "street", "supreme",  # 220
    "tip", "trip", "tired", "symbol", "thunder",  # 225
    "toe", "undo", "trade", "ticket", "trigger",  # 230
    "toy", "visa", "truth", "travel", "uncover",  # 235
    "two", "wasp", "vague", "unfold", "utility",  # 240
    "van", "wild", "vivid", "valley", "vibrant",  # 245
    "web", "yard", "zebra", "voyage", "weather",  # 250
    "zoo",  # 255
)
# fmt: on

assert len(WORDS) == 256


def nickname(digest: bytes) -> str:
    """Return fwup's ``meta-nickname`` for a meta-uuid hash.

    ``digest`` is anything that starts with the UUID's first two bytes: the
    32-byte BLAKE2b digest (before or after the ``h[6]`` version-nibble tweak,
    which does not touch bytes 0 and 1) or the 16 UUID bytes
    (``uuid.UUID(text).bytes``). Only ``digest[0]`` and ``digest[1]`` are used.

    >>> nickname(bytes.fromhex("9a259ae2e15c596e48a2a31a8aae8a10"))
    'network-cabin'
    """
    if len(digest) < 2:
        raise ValueError(f"nickname needs at least 2 bytes of the hash, got {len(digest)}")
    return f"{WORDS[digest[0]]}-{WORDS[digest[1]]}"
