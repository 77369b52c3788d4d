"""The local stack's state folder (SQLite database, logs, the sign-in
password) is the owner's alone: 0700, and the credentials file 0600 from the
moment it exists."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import private_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_dir_creates_and_tightens(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        fresh = private_dir(tmp_path / "a" / "state")
        assert mode(fresh) == 0o700
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o755)
        assert mode(private_dir(loose)) == 0o700
    finally:
        os.umask(old)


@pytest.mark.django_db
def test_seed_writes_the_credentials_0600_in_a_0700_folder(tmp_path: Path, settings: Any) -> None:
    from dashboard.devtools.management.commands.devstack_seed import Command

    settings.STATE_DIR = tmp_path / "state"
    old = os.umask(0o022)  # a typical umask would make files world-readable
    try:
        Command()._ensure_users()
    finally:
        os.umask(old)
    credentials = settings.STATE_DIR / "credentials.txt"
    assert mode(settings.STATE_DIR) == 0o700
    assert mode(credentials) == 0o600
    password = credentials.read_text().split()[-1]
    # an existing, too-open file is tightened and its password kept
    credentials.chmod(0o644)
    Command()._ensure_users()
    assert mode(credentials) == 0o600
    assert credentials.read_text().split()[-1] == password
