"""The multi-process deployment of docs/SCALING.md, brought up on loopback for a test.

Every process is started from the step blocks of docs/SCALING.md (a fenced ``bash`` block
whose first line is ``# step: NAME``), in ``bash`` with the settings of
``deploy/.env.example`` loaded the way the guide says (``set -a; . FILE; set +a``): only
ports, directories, the password and the Slack address are replaced. So a change to the
guide or to ``deploy/`` that breaks the deployment breaks this test.
(PYTEST_DONT_REWRITE: no asserts here.)
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calendar_pipeline_tests.dagster_dev import REPO_ROOT, free_port, graphql, scrubbed_env
from calendar_pipeline_tests.markdown_blocks import bash_blocks
from calendar_pipeline_tests.postgres import as_postgres_user, pg_bin
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

SCALING = REPO_ROOT / "docs" / "SCALING.md"
ENV_EXAMPLE = REPO_ROOT / "deploy" / ".env.example"
STEP = re.compile(r"# step: ([a-z-]+)[^\n]*\n")


def scaling_steps() -> dict[str, str]:
    """``{step name: its shell lines}``: the bash blocks of docs/SCALING.md whose first
    line is ``# step: NAME``."""
    steps = {}
    for block in bash_blocks(str(SCALING.relative_to(REPO_ROOT))):
        step = STEP.match(block.text + "\n")
        if step:
            steps[step.group(1)] = block.text[step.end() :] + "\n"
    return steps


def env_file_text(overrides: dict[str, str]) -> str:
    """deploy/.env.example with ``overrides`` replacing its values (in place, so the
    example's own ``${VAR}`` references still resolve), and appended when it lacks one."""
    lines, seen = [], set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        name = line.split("=", 1)[0] if re.match(r"^[A-Z][A-Z0-9_]*=", line) else None
        if name in overrides:
            lines.append(f"{name}={_quoted(overrides[name])}")
            seen.add(name)
        else:
            lines.append(line)
    lines += [f"{k}={_quoted(v)}" for k, v in overrides.items() if k not in seen]
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Deployment:
    """Ports, directories and processes of one deployment under ``root``."""

    root: Path
    slack_url: str
    fsync: bool = False  # PostgreSQL's fsync (the benchmark turns it on, as in production)
    ports: dict[str, int] = field(default_factory=dict)
    started: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("postgres", "pgbouncer", "redis", "code_server", "webserver"):
            self.ports[name] = free_port()
        self.password = secrets.token_hex(12)
        self.superuser_password = secrets.token_hex(12)
        self.lake = self.root / "lake"
        self.env_path = self.root / "deploy.env"

    # -- layout ------------------------------------------------------------------------

    @property
    def overrides(self) -> dict[str, str]:
        p = self.ports
        redis = f"redis://127.0.0.1:{p['redis']}"
        return {
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "POSTGRES_PORT": str(p["postgres"]),
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_PORT": str(p["pgbouncer"]),
            "PGBOUNCER_PORT": str(p["pgbouncer"]),
            "PGBOUNCER_DIR": str(self.root / "pgbouncer"),
            "PGBOUNCER_SOCKET_DIR": str(self.root / "pgbouncer" / "socket"),
            "REDIS_PORT": str(p["redis"]),
            "REDIS_DIR": str(self.root / "redis"),
            "DAGSTER_CELERY_BROKER_URL": f"{redis}/0",
            "DAGSTER_CELERY_BACKEND_URL": f"{redis}/1",
            "DAGSTER_CODE_SERVER_PORT": str(p["code_server"]),
            "DAGSTER_WEBSERVER_PORT": str(p["webserver"]),
            "CALENDAR_WEBSERVER_URL": f"http://127.0.0.1:{p['webserver']}",
            "CALENDAR_DATA_DIR": str(self.lake),
            "SLACK_BOT_TOKEN": DEFAULT_TOKEN,
            "SLACK_API_URL": self.slack_url,
        }

    def settings(self) -> dict[str, str]:
        """The environment every step sees once the env file is loaded (for the test's
        own connections)."""
        out = subprocess.run(
            ["bash", "-c", f"set -a; . {self.env_path}; set +a; env -0"],
            capture_output=True,
            check=True,
            env=self.base_env(),
        ).stdout.decode()
        return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)

    def base_env(self) -> dict[str, str]:
        env = scrubbed_env(self.root / "unused_home", self.lake)
        env.pop("DAGSTER_HOME")
        env.pop("CALENDAR_DATA_DIR")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def prepare(self) -> None:
        """Directories, the env file and a PostgreSQL server (scram-sha-256 over TCP, a
        superuser password), as an operator would have them before following the guide."""
        self.root.chmod(0o755)  # the postgres user reads the env file and writes below
        self.env_path.write_text(env_file_text(self.overrides))
        self.env_path.chmod(0o644)
        pg_root = self.root / "postgres"
        for directory in (pg_root, self.root / "pgbouncer"):
            directory.mkdir()
            if os.geteuid() == 0:
                shutil.chown(directory, "postgres", "postgres")
        pwfile = pg_root / "pw"
        pwfile.write_text(self.superuser_password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        initdb = [str(pg_bin("initdb")), "-D", str(pg_root / "data"), "-U", "postgres"]
        initdb += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        subprocess.run(as_postgres_user([*initdb, "--no-sync"]), check=True, capture_output=True)
        options = (
            f"-p {self.ports['postgres']} -k {pg_root} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
        )
        pg_ctl = [str(pg_bin("pg_ctl")), "-D", str(pg_root / "data"), "-o", options]
        pg_ctl += ["-l", str(pg_root / "log"), "-w", "start"]
        subprocess.run(as_postgres_user(pg_ctl), check=True, capture_output=True)

    def psql(self, sql: str) -> str:
        """Run SQL as the PostgreSQL superuser, over TCP with its password."""
        cmd = ["psql", "-h", "127.0.0.1", "-p", str(self.ports["postgres"]), "-U", "postgres"]
        return subprocess.run(
            [*cmd, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
            env={**self.base_env(), "PGPASSWORD": self.superuser_password},
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    # -- the guide's steps -------------------------------------------------------------------

    def run_step(self, name: str, *, extra_env: dict[str, str] | None = None) -> str:
        """Run a step that ends (e.g. ``database``); its output, or CalledProcessError."""
        env = {**self.base_env(), **(extra_env or {})}
        result = subprocess.run(
            ["bash", "-c", self._script(name)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode:
            raise RuntimeError(f"step {name} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start_step(
        self, name: str, *, label: str | None = None, as_postgres: bool = False, **env: str
    ) -> subprocess.Popen:
        """Start a long-running step in its own session; output to ``{label}.log``."""
        label = label or name
        log = open(self.root / f"{label}.log", "wb")  # noqa: SIM115 (closed in stop)
        cmd = ["bash", "-c", self._script(name)]
        proc = subprocess.Popen(
            as_postgres_user(cmd) if as_postgres else cmd,
            cwd=REPO_ROOT,
            env={**self.base_env(), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append((label, proc))
        return proc

    def _script(self, name: str) -> str:
        return f"set -euo pipefail; set -a; . {self.env_path}; set +a\n{scaling_steps()[name]}"

    def log(self, label: str, lines: int = 40) -> str:
        try:
            text = (self.root / f"{label}.log").read_text(errors="replace")
        except OSError:
            return f"({label}: no log)"
        return f"--- {label} ---\n" + "\n".join(text.splitlines()[-lines:])

    def logs(self, lines: int = 25) -> str:
        return "\n".join(self.log(label, lines) for label, _ in self.started)

    def alive(self, label: str) -> bool:
        return any(lbl == label and p.poll() is None for lbl, p in self.started)

    def kill(self, label: str, sig: int = signal.SIGKILL) -> None:
        for lbl, proc in self.started:
            if lbl == label and proc.poll() is None:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=30)

    def stop(self) -> None:
        """Every process group this deployment started, then PostgreSQL."""
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
        data = str(self.root / "postgres" / "data")
        pg_ctl = [str(pg_bin("pg_ctl")), "-D", data, "-m", "immediate", "stop"]
        subprocess.run(as_postgres_user(pg_ctl), capture_output=True)

    # -- talking to it -----------------------------------------------------------------------

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return graphql(f"http://127.0.0.1:{self.ports['webserver']}", query, variables)

    def webserver_up(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.ports['webserver']}/server_info"
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False


def new_root() -> Path:
    """A directory the ``postgres`` user can traverse (pytest's tmp_path is root-only)."""
    return Path(tempfile.mkdtemp(prefix="calendar-deploy-"))
