"""Other users for tests: a throw-away member of group ``nhlink``, and ``setpriv`` argv.

pyenv's interpreter cannot be run by other uids (its folder is 0700): what runs
as another uid runs under Debian's ``/usr/bin/python3`` (../shared/ENVIRONMENT.md).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

# Debian's interpreter (pyenv's cannot be run by other uids).
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534


@dataclass(frozen=True)
class GroupMember:
    name: str
    uid: int
    group: str


@contextlib.contextmanager
def group_member(group: str = "nhlink", name: str = "") -> Iterator[GroupMember]:
    """A user (default name: ``nhlt<pid>``) whose only supplementary group is ``group``;
    both are created if missing and removed afterwards."""
    created_group = False
    try:
        grp.getgrnam(group)
    except KeyError:
        subprocess.run(["groupadd", "--system", group], check=True)
        created_group = True
    name = name or f"nhlt{os.getpid() % 100000}"
    subprocess.run(
        [
            "useradd",
            "--no-create-home",
            "--no-user-group",
            "--gid",
            "nogroup",
            "--groups",
            group,
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
    )
    try:
        yield GroupMember(name, pwd.getpwnam(name).pw_uid, group)
    finally:
        subprocess.run(["userdel", name], check=False)
        if created_group:
            subprocess.run(["groupdel", group], check=False)


def as_user_argv(uid: int, *, init_groups: bool = False) -> list[str]:
    """``setpriv`` to ``uid``: nobody's group and no others, or the user's own groups."""
    if init_groups:
        return ["setpriv", f"--reuid={uid}", f"--regid={NOBODY}", "--init-groups"]
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
