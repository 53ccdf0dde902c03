"""The configuration of the newer device API: [firmware] validate, [extensions],
[health], [geo] — defaults, what reaches the core, and refusals by name."""

from __future__ import annotations

import pytest

from nhlink_dbus.core.device_api import DeviceApiSettings
from tests.test_config import MINIMAL, SRC, add, error_of, parse


def test_defaults_reach_the_core() -> None:
    config = parse(MINIMAL)
    assert config.device_api_settings() == DeviceApiSettings()
    assert (config.firmware.validate, config.firmware.validate_after_ms) == ("manual", 0)
    assert config.extensions.offer == ("health", "geo")
    assert config.health.disk_path == "/"
    assert (config.geo.geoclue, config.geo.latitude) == (True, None)


def test_values_reach_the_core() -> None:
    text = add("firmware", 'validate = "on-connect"\nvalidate_after_ms = 500')
    text += '\n[extensions]\noffer = ["geo"]\n'
    settings = parse(text).device_api_settings()
    assert settings == DeviceApiSettings(
        validate="on-connect", validate_after_ms=500, extensions=("geo",)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (add("firmware", 'validate = "sometimes"'), "firmware.validate: must be one of manual"),
        ('[extensions]\noffer = ["local_shell"]', "extensions.offer: unknown extension"),
        ('[extensions]\noffer = ["geo", "geo"]', "extensions.offer: names an extension twice"),
        ('[health]\ndisk_path = "data"', "health.disk_path: must be an absolute path"),
        ("[geo]\nlatitude = 91", "geo.latitude: must be between -90 and 90"),
        ("[geo]\nlatitude = 10", "geo.longitude: set both or neither"),
        ("[geo]\naccuracy_m = 10", "geo.accuracy_m: only with latitude and longitude"),
        ('[geo]\nlatitude = "north"', "geo.latitude: must be a number"),
        ('[geo]\ndesktop_id = "a b"', "geo.desktop_id: not a valid desktop id"),
        ("[geo]\ngeoclue_timeout_ms = 10", "geo.geoclue_timeout_ms: must be between 100"),
        ("[geo]\nlatitute = 1", "geo.latitute: unknown key (did you mean 'latitude'?)"),
    ],
)
def test_refusals_name_the_key(text: str, message: str) -> None:
    full = text if "[hub]" in text else MINIMAL + text + "\n"
    problem = error_of(full)
    assert problem.startswith(f"{SRC}: {message}"), problem
