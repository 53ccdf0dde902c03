"""Fixtures for the kiosk prompt tests: an X server per test, the prompts' tree, a user
in a group of this session's own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.users import GroupMember, group_member
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


@pytest.fixture(scope="session")
def kiosk_member() -> Iterator[GroupMember]:
    """A user in a group only this test session creates and removes.

    Not ``nhlink`` itself: test sessions running side by side on one machine create
    and remove that group, and a member who loses it mid-run is "not allowed". The
    daemon is configured with this group, and the bus gets the shipped policy for
    it (tests/kiosk/test_gui.py), as the policy file says to do for another group.
    """
    tag = os.getpid() % 100000
    with group_member(f"nhlk{tag}", f"nhlk{tag}u") as member:
        yield member
