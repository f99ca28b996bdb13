"""PostgreSQL's server binaries, run the way the tests (and the deployment test) need them:
from the Debian package's directory, as the ``postgres`` user when the tests run as root
(PostgreSQL and PgBouncer refuse to run as root)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PG_BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin")]


def pg_bin(name: str) -> str | None:
    """The path of a server binary (``initdb``, ``pg_ctl``), or None when not installed."""
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    return shutil.which(name)


def as_postgres_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` user when we are root, else as it is."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd
