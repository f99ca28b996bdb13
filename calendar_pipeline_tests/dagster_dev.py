"""Start and stop a throwaway ``dagster dev`` (webserver + daemon) for end-to-end tests.

    with DagsterDev.in_tmpdir(root) as dev:         # temp DAGSTER_HOME and CALENDAR_DATA_DIR
        dev.graphql("{ version }")
        ...                                         # dev.base_url is http://127.0.0.1:<port>

Used by ``test_ui_e2e.py`` and by ``scripts/screenshot_ui.py`` (the browser side of both is
``ui_browser.py``). What it takes care of:

- Settings: inherited ``CALENDAR_*`` and ``SLACK_*`` variables (and every other one that
  ``.env.example`` documents) are dropped, so the server runs with the project's defaults
  and no Slack token (dry-run: nothing can be posted).
  ``DAGSTER_HOME`` is a fresh directory holding a copy of the repository's ``dagster.yaml``;
  ``CALENDAR_DATA_DIR`` is a fresh directory too.
- ``.env``: ``dagster dev`` loads ``.env`` from its *current directory*, and its values
  override the environment. The server is therefore started with ``cwd`` set to a
  temporary directory that holds no ``.env``, and finds the code through a
  ``workspace.yaml`` written there (``-w``; the package is installed, so the module imports
  from anywhere), so a developer's own ``.env`` in the repository root can neither redirect
  the data nor reach Slack.
- The code location: that ``workspace.yaml`` says what pyproject.toml's ``[tool.dg.project]``
  says (module and ``code_location_name``, ``LOCATION_NAME``), as plain ``dagster dev`` and
  ``dg dev`` in the repository do. ``-m calendar_pipeline.definitions`` would name it after
  the module instead, and the UI (URLs, screenshots) would show a name users never see.
- Signals: a process started in the background from a non-interactive shell inherits
  SIGINT/SIGTERM as *ignored*, and ``dagster dev`` then ignores SIGTERM. The child gets the
  default handlers back (``preexec_fn``) and its own session (``start_new_session``), so one
  ``killpg`` reaches the webserver, the daemon, the code servers and the run workers (Dagster
  starts none of them in a new session or process group).
- Stopping: SIGTERM to the process group (again once the leader has exited, for a code
  server Dagster restarted meanwhile), up to ``grace`` seconds for the leader and its
  children to exit, then SIGKILL to the group. ``leftover_pids()`` lists what is still alive
  in the group or carries this server's DAGSTER_HOME (nothing, normally);
  ``kill_leftovers()`` kills those too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["dg"][
    "project"
]

# The code location as users see it (`dagster dev` or `dg dev` in the repository: the
# project's [tool.dg.project]); a Definitions object is the repository "__repository__".
LOCATION_NAME = PROJECT["code_location_name"]
REPOSITORY_NAME = "__repository__"


def copy_of_repository(root: Path) -> Path:
    """The repository's files (tracked, and new ones not ignored) copied under ``root``: a
    checkout to scaffold into or to run an instance in, leaving the real one alone."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        if (REPO_ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, root / name)
    return root


def write_workspace(directory: Path) -> Path:
    """A workspace.yaml in ``directory`` loading the project's code location as pyproject.toml
    names it (so that ``dagster dev`` can start outside the repository)."""
    path = directory / "workspace.yaml"
    entry = {
        "module_name": PROJECT["code_location_target_module"],
        "working_directory": str(REPO_ROOT),
        "location_name": LOCATION_NAME,
    }
    path.write_text(yaml.safe_dump({"load_from": [{"python_module": entry}]}), encoding="utf-8")
    return path


START_TIMEOUT_S = 120.0  # dagster dev start-up until /server_info answers (2 slow cores)
STOP_GRACE_S = 20.0  # SIGTERM -> SIGKILL


class GraphQLError(RuntimeError):
    pass


def console_script(name: str) -> str:
    """The console script next to this interpreter (the same virtualenv), else PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SETTING_PREFIXES = ("CALENDAR_", "SLACK_", "NAGER_", "FINNHUB_")


def project_setting_names() -> set[str]:
    """Every variable .env.example documents (commented out or not)."""
    try:
        text = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    except OSError:
        return set()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def scrubbed_env(dagster_home: Path, data_dir: Path) -> dict[str, str]:
    """This process's environment minus project settings (``CALENDAR_*``, ``SLACK_*``, the
    source adapters' ``NAGER_*``/``FINNHUB_*`` and anything else .env.example lists), plus
    the given directories."""
    drop = project_setting_names()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES) and k not in drop
    }
    env["DAGSTER_HOME"] = str(dagster_home)
    env["CALENDAR_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def graphql(base_url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST ``{base_url}/graphql``; the ``data`` member, or GraphQLError on any reported
    error."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise GraphQLError(f"HTTP {exc.code}: {exc.read()[:2000]!r}") from None
    if payload.get("errors"):
        raise GraphQLError(json.dumps(payload["errors"], indent=1)[:4000])
    return payload["data"]


def _default_signal_handlers() -> None:
    # Runs in the child between fork and exec (see the module docstring, "Signals").
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _live_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process that is not a zombie (Linux
    /proc; empty elsewhere)."""
    found = []
    for entry in _proc_dirs():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z":
            found.append((int(entry.name), int(fields[1]), int(fields[2])))
    return found


def _process_group_members(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid``."""
    return [pid for pid, _, group in _live_processes() if group == pgid]


def child_processes(pid: int) -> list[int]:
    """PIDs whose parent is ``pid``."""
    return [child for child, parent, _ in _live_processes() if parent == pid]


def _processes_with_environ(entry: bytes) -> list[int]:
    """Live PIDs whose initial environment holds ``entry`` (``NAME=value``)."""
    found = []
    for proc_dir in _proc_dirs():
        try:
            environ = (proc_dir / "environ").read_bytes()
            state = (proc_dir / "stat").read_text()
        except OSError:
            continue
        if entry in environ.split(b"\0") and state[state.rfind(")") + 2 :][:1] != "Z":
            found.append(int(proc_dir.name))
    return found


def _proc_dirs() -> list[Path]:
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    return [entry for entry in proc.iterdir() if entry.name.isdigit()]


class DagsterDev:
    """One ``dagster dev`` process group; see the module docstring."""

    def __init__(
        self,
        *,
        dagster_home: Path,
        data_dir: Path,
        cwd: Path,
        log_path: Path,
        workspace: Path | None = None,
        env: dict[str, str] | None = None,
        command: str = "dagster dev",
    ) -> None:
        self.dagster_home = dagster_home
        self.data_dir = data_dir
        self.cwd = cwd
        self.log_path = log_path
        # `dagster dev` (with a workspace file, from any directory) or `dg dev` (in a project
        # directory: it reads [tool.dg] there, so `cwd` is that directory)
        self.command = command
        self.workspace = workspace or write_workspace(cwd) if command == "dagster dev" else None
        self.env = env if env is not None else scrubbed_env(dagster_home, data_dir)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @classmethod
    def in_tmpdir(cls, root: Path) -> DagsterDev:
        """Directories under ``root``: dagster_home (with dagster.yaml), data, cwd, log."""
        dagster_home, data_dir, cwd = root / "dagster_home", root / "data", root / "cwd"
        for directory in (dagster_home, data_dir, cwd):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        return cls(
            dagster_home=dagster_home,
            data_dir=data_dir,
            cwd=cwd,
            log_path=root / "dagster_dev.log",
        )

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("dagster dev is not started")
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> DagsterDev:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = START_TIMEOUT_S, attempts: int = 3) -> None:
        """Start on a free port and wait for /server_info; retry if the port was taken."""
        if (self.cwd / ".env").exists():
            raise RuntimeError(f"{self.cwd / '.env'} exists: dagster dev would load it")
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self._spawn()
            try:
                self._wait_until_serving(timeout)
                return
            except RuntimeError:
                exited = self.proc is not None and self.proc.poll() is not None
                port_taken = "address already in use" in self.log_tail(200).lower()
                self.stop()
                if not (exited and port_taken) or attempt == attempts:
                    raise

    def _spawn(self) -> None:
        if self.command == "dg dev":
            cmd = [console_script("dg"), "dev", "-p", str(self.port)]
        else:
            cmd = [console_script("dagster"), "dev", "-w", str(self.workspace)]
            cmd += ["-h", "127.0.0.1", "-p", str(self.port)]
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            log.write(f"\n$ {' '.join(cmd)}  (cwd {self.cwd})\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_default_signal_handlers,
            )

    def _wait_until_serving(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dagster dev exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"{self.base_url}/server_info not up after {timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, wait up to ``grace`` s, then SIGKILL the group."""
        proc = self.proc
        if proc is None:
            return
        deadline = time.monotonic() + grace
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        # Wait for the leader *and* its children (webserver, daemon, code servers, runs).
        signalled_again = False
        while proc.poll() is None or _process_group_members(proc.pid):
            if time.monotonic() > deadline:
                self._note(f"dagster dev still alive {grace:.0f} s after SIGTERM: SIGKILL")
                break
            if proc.poll() is not None and not signalled_again:
                # The leader is gone but not its group: a process started after the
                # SIGTERM (Dagster restarts a code server that exits during shutdown)
                # never got it, and would wait for its heartbeat to time out.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                signalled_again = True
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):  # nobody left: the usual case
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # A process killed by SIGKILL is still listed for a moment: wait until it is gone.
        killed_by = time.monotonic() + 5.0
        while _process_group_members(proc.pid) and time.monotonic() < killed_by:
            time.sleep(0.1)

    def leftover_pids(self) -> list[int]:
        """Live processes of this server (after ``stop``: none): its process group, and
        anything that inherited its DAGSTER_HOME, in case a child left the group."""
        if self.proc is None:
            return []
        marker = f"DAGSTER_HOME={self.dagster_home}".encode()
        return sorted(
            set(_process_group_members(self.proc.pid)) | set(_processes_with_environ(marker))
        )

    def kill_leftovers(self) -> list[int]:
        """SIGKILL whatever ``leftover_pids`` finds; returns those PIDs (normally none)."""
        leftovers = self.leftover_pids()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leftovers

    # -- talking to it -----------------------------------------------------------------------

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return graphql(self.base_url, query, variables)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _note(self, message: str) -> None:
        with self.log_path.open("a") as log:
            log.write(f"[dagster_dev.py] {message}\n")
