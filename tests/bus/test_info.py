"""bus.info: typing of info dictionaries, URL dropping, error mapping.

The redaction of URLs and text itself is tested in tests/core/test_redact.py.
"""

from __future__ import annotations

import pytest
from dbus_next.signature import Variant

from nhlink_dbus import names
from nhlink_dbus.bus.info import info_to_variants, unwrap
from nhlink_dbus.bus.interface import INTERNAL_MESSAGE, error_for
from nhlink_dbus.errors import (
    ConfigError,
    InvalidArgument,
    InvalidDecision,
    NotPossible,
    RequestError,
    UnknownRequest,
)


def test_one_type_per_python_type() -> None:
    assert info_to_variants({"a": "x", "b": True, "c": 7, "d": -1, "e": 2**63 - 1}) == {
        "a": Variant("s", "x"),
        "b": Variant("b", True),
        "c": Variant("x", 7),
        "d": Variant("x", -1),
        "e": Variant("x", 2**63 - 1),
    }


def test_values_that_do_not_fit_are_dropped() -> None:
    assert info_to_variants({"big": 2**63, "f": 1.5, "n": None, "ok": "y"}) == {
        "ok": Variant("s", "y")
    }


@pytest.mark.parametrize("key", ["url", "URL", "firmware_url", "download-url", "Archive_Url"])
def test_url_keys_are_dropped(key: str) -> None:
    assert info_to_variants({key: "anything", "version": "1"}) == {"version": Variant("s", "1")}


@pytest.mark.parametrize(
    "value", ["https://s3/x?X-Amz-Signature=1", "http://h/x", " HTTPS://h", "ftp://h/x", "s3://b/k"]
)
def test_url_values_are_dropped(value: str) -> None:
    assert info_to_variants({"misc": value}) == {}


def test_text_mentioning_a_url_in_the_middle_is_kept() -> None:
    assert info_to_variants({"description": "see the notes"}) == {
        "description": Variant("s", "see the notes")
    }


def test_unwrap() -> None:
    nested = {"a": Variant("a{sv}", {"b": Variant("as", ["c"])}), "d": [Variant("u", 1)]}
    assert unwrap(nested) == {"a": {"b": ["c"]}, "d": [1]}


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (UnknownRequest("x"), "UnknownRequest"),
        (InvalidDecision("x"), "InvalidDecision"),
        (InvalidArgument("x"), "InvalidArgument"),
        (NotPossible("x"), "NotPossible"),
        (RequestError("x"), "RequestError"),
    ],
)
def test_request_errors_map_by_class_name(exc: Exception, name: str) -> None:
    assert error_for(exc) == (names.ERROR_PREFIX + name, "x")


def test_other_errors() -> None:
    assert error_for(ConfigError("bad key")) == (names.ERROR_FAILED, "bad key")
    assert error_for(KeyError("secret")) == (names.ERROR_INTERNAL, INTERNAL_MESSAGE)
