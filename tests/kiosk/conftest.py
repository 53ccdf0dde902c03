"""Fixtures for the kiosk prompt tests: an X server per test, the prompts' tree."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kiosk.gui import XServer, kiosk_tree


@pytest.fixture
def xserver() -> Iterator[XServer]:
    """A fresh Xvfb (no window manager) for one test."""
    server = XServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kiosk_path() -> Iterator[Path]:
    """``PYTHONPATH`` for prompts run by other uids: a world-readable ``nhlink_kiosk``."""
    root = kiosk_tree()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
