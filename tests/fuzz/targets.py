"""The fuzz targets: every parser of outside input, and its contract.

Contract (issue 14): for any input, a parser returns a value or raises its one
documented error, never another exception, and never hangs. Each :class:`Target`
has a strategy (inputs shaped like the real thing, then mutated: real frames,
payloads, archives and files with bytes flipped, inserted, cut and copied) and a
``check`` that runs one input and raises :class:`ContractBroken` (or lets the
stray exception through) when the contract does not hold.

Seeds (a small signed ``.fw``, a U-Boot block, configuration files) are made
when a strategy is first built, never at import: nothing here can expire.

The D-Bus target (every method of ``org.nerveshub.Link1`` with any arguments,
through a real private bus to the real daemon) lives in ``tests/fuzz/bus.py``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from nhlink_dbus.config import parse_config
from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import uboot_env
from nhlink_dbus.core.fwup_conf import load_meta_conf
from nhlink_dbus.core.fwup_meta import ArchiveInspector
from nhlink_dbus.core.hub_session import DeviceInfo, HubSession
from nhlink_dbus.core.phoenix import PhoenixConnection, decode_frame
from nhlink_dbus.errors import ConfigError, FirmwareError, ProtocolError
from nhlink_dbus.fwup.signature import check_signature, parse_public_key

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "fwup")


class ContractBroken(AssertionError):
    """A parser gave something other than a value or its documented error."""


@dataclass(frozen=True)
class Target:
    """``strategy`` draws base inputs; ``derive(base, rng)`` makes one more input from a
    base quickly (a few random edits); ``check`` runs one input under the contract."""

    name: str
    error: str  # the one documented error, for the report
    strategy: Callable[[], st.SearchStrategy[Any]]
    derive: Callable[[Any, random.Random], Any]
    check: Callable[[Any], None]


# -- mutation ------------------------------------------------------------------------------


def _mutate(seed: bytes, ops: Sequence[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for op, position, chunk in ops:
        at = position % (len(data) + 1)
        if op == 0 and at < len(data):  # flip bits of one byte
            data[at] ^= chunk[0] or 1
        elif op == 1:  # insert
            data[at:at] = chunk
        elif op == 2:  # cut
            del data[at : at + len(chunk) * 16]
        elif op == 3:  # repeat a piece (lengths and counts run into each other)
            data[at:at] = data[at : at + len(chunk) * 8]
        else:  # truncate
            del data[at:]
    return bytes(data)


def mutated(seeds: Sequence[bytes], max_ops: int = 6) -> st.SearchStrategy[bytes]:
    """A seed with up to ``max_ops`` byte-level edits (none: the seed itself)."""
    op = st.tuples(st.integers(0, 4), st.integers(0, 1 << 24), st.binary(min_size=1, max_size=6))
    # truncation rarely: weigh it down by drawing it only as the last op of some lists
    return st.builds(_mutate, st.sampled_from(list(seeds)), st.lists(op, max_size=max_ops))


def fast_mutate(data: bytes, rng: random.Random, max_ops: int = 4) -> bytes:
    """:func:`_mutate` with random edits (the batches derived from each base input)."""
    ops = [
        (
            rng.randrange(5) if rng.random() < 0.9 else 0,
            rng.randrange(1 << 24),
            rng.randbytes(rng.randint(1, 6)),
        )
        for _ in range(rng.randint(1, max_ops))
    ]
    return _mutate(data, ops)


_SCALARS: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    2**64,
    1.5,
    float("inf"),
    "",
    "x",
    "ü\u0000",
    [],
    {},
)


def mutate_value(value: Any, rng: random.Random) -> Any:
    """A JSON-like value with one node replaced, dropped or wrapped."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.2:
            del out[key]
        elif roll < 0.3:
            out[key + rng.choice(["", "_", "x"])] = rng.choice(_SCALARS)
        else:
            out[key] = mutate_value(out[key], rng)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        out_list = list(value)
        index = rng.randrange(len(out_list))
        out_list[index] = mutate_value(out_list[index], rng)
        return out_list
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(_SCALARS)
    if roll < 0.8:
        return [value]
    return {"value": value}


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


# -- Phoenix frames ------------------------------------------------------------------------

_EVENTS = ("phx_reply", "phx_error", "phx_close", "update", "archive", "reboot", "heartbeat", "x")
_TOPICS = ("device", "phoenix", "console", "extensions", "")


def _frame_seeds() -> list[bytes]:
    frames = [
        ["1", "1", "device", "phx_reply", {"status": "ok", "response": {}}],
        ["1", "2", "device", "phx_reply", {"status": "error", "response": {"reason": "x"}}],
        [None, "3", "phoenix", "phx_reply", {"status": "ok", "response": {}}],
        ["1", None, "device", "update", {"firmware_url": "http://h/f?X-Amz-Signature=s"}],
        ["1", "1", "device", "phx_error", {}],
        ["1", "1", "device", "phx_close", {}],
        [None, None, "device", "identify", {}],
    ]
    return [json.dumps(f).encode() for f in frames]


def _frames() -> st.SearchStrategy[str | bytes]:
    built = st.builds(
        lambda *parts: json.dumps(list(parts)),
        st.sampled_from([None, "1", "2", "3", 1, ""]),
        st.sampled_from([None, "1", "2", "3", "9", 2]),
        st.sampled_from(_TOPICS) | st.text(max_size=8),
        st.sampled_from(_EVENTS) | st.text(max_size=8),
        st.dictionaries(st.sampled_from(["status", "response", "reason"]), json_values, max_size=3)
        | json_values,
    )
    raw = mutated(_frame_seeds())
    return built | raw | raw.map(_text) | st.text(max_size=60)


def derive_frame(base: str | bytes, rng: random.Random) -> str | bytes:
    data = fast_mutate(
        base.encode("utf-8", "surrogatepass") if isinstance(base, str) else base, rng
    )
    return data if rng.random() < 0.5 else _text(data)


def check_phoenix(frame: str | bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(frame)
    conn = PhoenixConnection(0.0, heartbeat_interval=30, rejoin_after=1)
    conn.join("device", {})
    conn.data_to_send()
    for now in (0.5, 31.0):  # as the join reply, and again after a heartbeat
        with contextlib.suppress(ProtocolError):
            conn.receive_text(frame, now)
        conn.tick(now)
        conn.events_received()
        for out in conn.data_to_send():
            decode_frame(out)  # what we send is always a frame


# -- hub payloads --------------------------------------------------------------------------

_HUB_EVENTS = (
    "update",
    "archive",
    "fwup_public_keys",
    "archive_public_keys",
    "reboot",
    "identify",
    "scripts/run",
    "check_health",
    "extensions:get",
    "update_mode",
    "update_available",
    "update_rejected",
    "attach",
    "detach",
    "health:check",
    "geo:location:request",
)
_URL = "https://files.example.com/f.fw?X-Amz-Signature=s3cr3tSig"


def _payload_seeds() -> list[dict[str, Any]]:
    meta = {"uuid": "u", "version": "1.0.0", "product": "p", "architecture": "x86_64"}
    return [
        {"update_available": True, "firmware_url": _URL, "firmware_meta": meta},
        {"firmware_url": _URL, "firmware_meta": meta, "deployment_id": 7},
        {"update_available": False, "firmware_url": None, "firmware_meta": None},
        {"size": 10, "uuid": "a", "version": "1", "url": _URL, "description": "d"},
        {"keys": ["a2V5"]},
        {"text": "IO.puts(1)", "ref": "r1"},
        {},
    ]


def _edit_payload(seed: dict[str, Any], edits: list[tuple[str, Any]]) -> Any:
    payload: dict[str, Any] = dict(seed)
    for key, value in edits:
        if key == "!drop" and payload:
            payload.pop(next(iter(payload)))
        elif key == "!nest" and payload:
            first = next(iter(payload))
            payload[first] = {"nested": payload[first]}
        else:
            payload[key] = value
    return payload


def _payloads() -> st.SearchStrategy[Any]:
    keys = st.sampled_from(
        ["firmware_url", "firmware_meta", "deployment_id", "update_available", "size", "uuid",
         "version", "url", "keys", "text", "ref", "!drop", "!nest"]
    )  # fmt: skip
    edited = st.builds(
        _edit_payload,
        st.sampled_from(_payload_seeds()),
        st.lists(st.tuples(keys, json_values), max_size=4),
    )
    return st.tuples(st.sampled_from(_HUB_EVENTS) | st.text(max_size=10), edited | json_values)


def derive_payload(base: tuple[str, Any], rng: random.Random) -> tuple[str, Any]:
    event, payload = base
    if rng.random() < 0.2:
        event = rng.choice(_HUB_EVENTS)
    return event, mutate_value(payload, rng)


def _joined_session() -> HubSession:
    session = HubSession(
        DeviceInfo({}, "1.16.0", extensions={"health": "0.0.1", "geo": "0.0.1"}),
        heartbeat_interval_ms=30_000,
        rejoin_after_ms=5_000,
    )
    session.begin_attempt(0.0)
    session.connected(0.0)
    for frame in session.data_to_send():
        join_ref, ref, topic, _event, _payload = json.loads(frame)
        reply = {"status": "ok", "response": {}}
        session.receive_text(json.dumps([join_ref, ref, topic, "phx_reply", reply]), 0.1)
    session.events()
    return session


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [t for item in value for t in _strings(item)]
    return []


def _urls_kept_out(value: object, payload: Any) -> None:
    """A parsed value's repr never shows the download URL it carries (a credential),
    unless the same text also came in another field (the fuzzer copies strings)."""
    if not isinstance(payload, dict):
        return
    keys = ("firmware_url", "url")
    others = [t for k, v in payload.items() if k not in keys for t in _strings(v)]
    for url in (payload.get(k) for k in keys):
        unique = isinstance(url, str) and len(url) >= 8 and not any(url in t for t in others)
        if unique and url in repr(value):
            raise ContractBroken(f"the URL in the repr of {type(value).__name__}")


def check_hub(case: tuple[str, Any]) -> None:
    event, payload = case
    for parse in (lambda: hm.parse_server_message(event, payload),
                  lambda: hm.parse_update_check(payload)):  # fmt: skip
        try:
            value = parse()
        except ProtocolError:
            continue
        if value is not None:
            _urls_kept_out(value, payload)
    # and as the hub sends it: a push on "device" (and "extensions") of a joined session,
    # which hands every event to its parser (the newer API's too); only ProtocolError
    # may come out, for a frame that is not one
    session = _joined_session()
    for topic in ("device", "extensions"):
        try:
            text = json.dumps(["1", None, topic, event, payload])
        except (TypeError, ValueError):
            return  # not JSON (a NaN is; a set is not): nothing a hub can send
        with contextlib.suppress(ProtocolError):
            session.receive_text(text, 1.0)
        for value in session.events():
            _urls_kept_out(value, payload)
        for out in session.data_to_send():
            decode_frame(out)


# -- meta.conf -----------------------------------------------------------------------------


@functools.cache
def _small_fw() -> tuple[bytes, bytes, str]:
    """(a small signed .fw, its meta.conf, the public key): made once, on first use."""
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from nhlink_devtools.fw_builder import create_fw, load_private_key  # noqa: PLC0415

    key = load_private_key(Path(FIXTURES, "test-only-fwup-key.priv").read_text())
    body = (
        'task "upgrade" {\n'
        '  on-resource "a.img" { raw_write(0) }\n'
        '  on-resource "b.img" { raw_write(8) }\n'
        "}\n"
    )
    meta = {"meta-product": "fuzz", "meta-version": "1.0.0", "meta-platform": "x86_64"}
    resources = {"a.img": bytes(range(256)) * 8, "b.img": os.urandom(1024)}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder, "small.fw")
        conf = create_fw(out, meta, resources, body, key, compresslevel=1)
        data = out.read_bytes()
    public = Path(FIXTURES, "fwup-key.pub").read_text().strip()
    return data, conf, public


def _meta_confs() -> st.SearchStrategy[bytes]:
    seeds = [_small_fw()[1]]
    for name in sorted(os.listdir(os.path.join(FIXTURES, "conf"))):
        if name.endswith(".conf"):
            with open(os.path.join(FIXTURES, "conf", name), "rb") as fh:
                seeds.append(fh.read())
    alphabet = st.sampled_from(
        [*list("ab={}(),\"'\\$#\n -*/01x"), "task", "on-resource", "raw_write"]
    )
    grammar = st.lists(alphabet, max_size=60).map(lambda parts: "".join(parts).encode())
    return mutated(seeds, max_ops=4) | grammar


def derive_bytes(base: bytes, rng: random.Random) -> bytes:
    return fast_mutate(base, rng)


def check_meta_conf(text: bytes) -> None:
    with contextlib.suppress(FirmwareError):
        load_meta_conf(text)


# -- .fw ZIP streams -----------------------------------------------------------------------


def _archives() -> st.SearchStrategy[tuple[bytes, list[int], bool]]:
    data = _small_fw()[0]
    with open(os.path.join(FIXTURES, "unsigned.fw"), "rb") as fh:
        unsigned = fh.read()[:4096]  # its head: the ZIP structures, not 256 KiB of data
    return st.tuples(
        mutated([data, unsigned], max_ops=4),
        st.lists(st.integers(1, 4096), max_size=6),  # chunk sizes
        st.booleans(),  # True: any signature passes, so edited meta.conf files are parsed
    )


def derive_archive(
    base: tuple[bytes, list[int], bool], rng: random.Random
) -> tuple[bytes, list[int], bool]:
    archive, _sizes, any_signature = base
    sizes = [rng.randint(1, 4096) for _ in range(rng.randint(0, 4))]
    return fast_mutate(archive, rng, max_ops=3), sizes, any_signature


def check_fw_stream(case: tuple[bytes, list[int], bool]) -> None:
    archive, sizes, any_signature = case
    public = parse_public_key(_small_fw()[2])
    checker = (lambda *_: True) if any_signature else check_signature
    inspector = ArchiveInspector([public], checker, verify=True)
    try:
        position = 0
        for size in [*sizes, len(archive)]:
            inspector.feed(archive[position : position + size])
            position += size
        inspector.finish()
    except FirmwareError:
        return
    if not inspector.complete:
        raise ContractBroken("the archive ended neither verified nor with a FirmwareError")


# -- U-Boot environment blocks -------------------------------------------------------------


def _env_blocks() -> st.SearchStrategy[tuple[bytes, bytes, int]]:
    plain = uboot_env.encode({"a": "1", "nerves_fw_active": "a", "a.nerves_fw_uuid": "u"}, 256)
    copies = [
        uboot_env.encode({"k": "v" * 20, "nerves_fw_active": "b"}, 128, flags=flags)
        for flags in (0, 1, 255)
    ]
    blocks = mutated([plain, *copies], max_ops=4) | st.binary(max_size=300)
    return st.tuples(blocks, blocks, st.integers(0, 2))


def derive_blocks(base: tuple[bytes, bytes, int], rng: random.Random) -> tuple[bytes, bytes, int]:
    first, second, layout = base
    if rng.random() < 0.7:
        first = fast_mutate(first, rng, max_ops=2)
    else:
        second = fast_mutate(second, rng, max_ops=2)
    return first, second, layout


def check_uboot_env(case: tuple[bytes, bytes, int]) -> None:
    first, second, layout = case
    try:
        if layout == 2:
            uboot_env.read_redundant(first, second, block_offset=8)
        else:
            uboot_env.decode(first, redundant=bool(layout))
    except uboot_env.UbootEnvError:
        pass


# -- the TOML configuration ------------------------------------------------------------------

_CONFIG_SEED = """
[hub]
url = "wss://devices.example.com"
identifier = "kiosk-1"
heartbeat_interval_ms = 30000
[hub.shared_secret]
key = "nhd_key"
secret = "s3cret"
[firmware]
kv = "uboot-env:/dev/mmcblk0:0x100000:0x2000"
devpath = "/dev/mmcblk0"
applier = "builtin"
public_keys = ["{key}"]
[decisions]
timeout_ms = 30000
default_update = "apply"
[reboot]
delay_ms = 5000
command = ["systemctl", "reboot"]
[download]
max_disconnects = 10
[logging]
level = "info"
"""

_CONFIG_KEYS = (
    "url", "identifier", "heartbeat_interval_ms", "key", "secret", "kv", "devpath", "applier",
    "public_keys", "timeout_ms", "default_update", "delay_ms", "command", "max_disconnects",
    "level", "retries", "task", "group", "fwup_env", "cafile", "sni", "secret_file",
)  # fmt: skip
_TABLES = ("hub", "hub.shared_secret", "hub.tls", "firmware", "decisions", "reboot",
           "download", "logging", "archives", "firmware.fwup_env", "x")  # fmt: skip


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else "nan"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _documents() -> st.SearchStrategy[str]:
    seed = _CONFIG_SEED.replace("{key}", _small_fw()[2])
    line = st.tuples(
        st.sampled_from(_CONFIG_KEYS),
        st.none()
        | st.booleans()
        | st.integers(-(2**64), 2**64)
        | st.text(max_size=30)
        | st.lists(st.integers(-5, 5) | st.text(max_size=5), max_size=3),
    )
    table = st.tuples(st.sampled_from(_TABLES), st.lists(line, max_size=5))

    def render(tables: list[tuple[str, list[tuple[str, Any]]]]) -> str:
        out = []
        for name, lines in tables:
            out.append(f"[{name}]")
            out += [f"{k} = {_toml_value('' if v is None else v)}" for k, v in lines]
        return "\n".join(out) + "\n"

    return (
        mutated([seed.encode()], max_ops=5).map(_text)
        | st.lists(table, max_size=6).map(render)
        | st.text(max_size=80)
    )


def derive_text(base: str, rng: random.Random) -> str:
    return _text(fast_mutate(base.encode("utf-8", "surrogatepass"), rng, max_ops=3))


def check_config(text: str) -> None:
    try:
        parse_config(text, "/etc/nhlink/nhlink.toml")
    except ConfigError as exc:
        if "\n" in str(exc):
            raise ContractBroken(f"a ConfigError of more than one line: {exc!r}") from None


# -- the list ------------------------------------------------------------------------------

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("phoenix-frames", "ProtocolError", _frames, derive_frame, check_phoenix),
        Target("hub-payloads", "ProtocolError", _payloads, derive_payload, check_hub),
        Target("meta-conf", "FirmwareError", _meta_confs, derive_bytes, check_meta_conf),
        Target("fw-zip-stream", "FirmwareError", _archives, derive_archive, check_fw_stream),
        Target("uboot-env", "UbootEnvError", _env_blocks, derive_blocks, check_uboot_env),
        Target("toml-config", "ConfigError", _documents, derive_text, check_config),
    )
}
