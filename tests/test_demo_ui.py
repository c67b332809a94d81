"""`maint demo --ui` as an operator runs it: its own process starts PostgreSQL and a Prefect server,
runs the duties, serves their deployments with the UI up, and on Ctrl-C stops all of it.

Only real processes: the test reads the demo's output, asks the server's HTTP API what it holds
(httpx, not Prefect's client: the demo's server is not the suite's), sends SIGINT and then checks
/proc and the ports for anything left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from maint.duties import DUTIES
from tests.conftest import system_fixture, wait_for

UI_LINE = re.compile(r"Prefect UI: (http://127\.0\.0\.1:(\d+))\s")
POSTGRES_LINE = re.compile(r"PostgreSQL on 127\.0\.0\.1:(\d+)")


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, process group, start time) from /proc/PID/stat; None once the process is gone,
    or has exited and only waits to be reaped (a zombie: the postmaster's parent is init, which
    here reaps when it gets to it)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def _processes() -> dict[int, tuple[int, int, int]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))):
            found[int(entry)] = stat
    return found


def _postmaster_on(port: int) -> int | None:
    """The pid of the postmaster listening on `port`, from its data directory's postmaster.pid
    (pg_ctl detaches it, so it is no descendant of the demo)."""
    for pid in _processes():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) != b"postgres" or b"-D" not in argv[:-1]:
            continue
        try:
            lines = (Path(os.fsdecode(argv[argv.index(b"-D") + 1])) / "postmaster.pid").read_text().splitlines()
        except OSError:
            continue
        if len(lines) > 3 and lines[0] == str(pid) and lines[3] == str(port):
            return pid
    return None


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@dataclass
class DemoUI:
    """One `maint demo --ui` process, its output collected as it comes."""

    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    started: dict[int, int] = field(default_factory=dict)  # pid: start time, of everything it started

    def __post_init__(self):
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def tail(self, lines: int = 40) -> str:
        return "".join(self.lines[-lines:])

    def wait_for_line(self, pattern: re.Pattern, timeout: float) -> re.Match:
        def seen():
            if match := pattern.search(self.output):
                return match
            if self.process.poll() is not None:
                pytest.fail(f"maint demo --ui exited with {self.process.returncode} before printing "
                            f"{pattern.pattern!r}:\n{self.tail()}", pytrace=False)
            return None
        return wait_for(seen, timeout=timeout, interval=0.2,
                        what=lambda: f"{pattern.pattern!r} in the output; so far:\n{self.tail()}")

    def note_what_it_started(self, postgres_port: int) -> None:
        """Its descendants (the Prefect server and that server's own children) and the postmaster."""
        processes = _processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in processes.items():
            children.setdefault(ppid, []).append(pid)
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                self.started[child] = processes[child][2]
                todo.append(child)
        postmaster = _postmaster_on(postgres_port)
        assert postmaster, f"no postmaster found listening on port {postgres_port}"
        self.started[postmaster] = processes[postmaster][2]

    def still_alive(self) -> list[int]:
        """What it started that is still there (same pid and the same start time: not a reused pid)."""
        alive = [pid for pid, started in self.started.items() if (stat := _stat(pid)) and stat[2] == started]
        return alive + [pid for pid, (_, group, _) in _processes().items()
                        if group == self.process.pid and pid not in alive]


@system_fixture
def demo_ui_process(tmp_path):
    """Starts `maint demo --ui --workdir DIR` as its own process group, as from a shell, without
    PREFECT_API_URL. If the test failed half-way, whatever is left is killed afterwards."""
    demos: list[DemoUI] = []

    def start(workdir: Path) -> DemoUI:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(tmp_path / "prefect-home"),  # no profile of this machine's either
                   PYTHONUNBUFFERED="1")
        # Ctrl-C must reach the demo as a terminal's would, even if this process was started with it ignored.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen([sys.executable, "-m", "maint.cli", "demo", "--ui", "--workdir", str(workdir)],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       text=True, env=env, cwd=tmp_path, start_new_session=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        demos.append(DemoUI(process))
        return demos[-1]

    yield start
    for demo in demos:
        if demo.process.poll() is None:
            demo.process.send_signal(signal.SIGINT)
            try:
                demo.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(demo.process.pid, signal.SIGKILL)
                demo.process.wait()
        for pid in demo.still_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT if _is_postgres(pid) else signal.SIGKILL)  # SIGQUIT: immediate shutdown


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(gone)"


def _is_postgres(pid: int) -> bool:
    try:
        return os.path.basename(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]) == b"postgres"
    except OSError:
        return False


def test_demo_ui_serves_the_deployments_and_ctrl_c_stops_everything_it_started(demo_ui_process, tmp_path):
    workdir = tmp_path / "maint-demo"
    demo = demo_ui_process(workdir)

    ui = demo.wait_for_line(UI_LINE, timeout=300)  # the duties run first: a minute or two on 2 cores
    ui_url, prefect_port = ui.group(1), int(ui.group(2))
    postgres_port = int(demo.wait_for_line(POSTGRES_LINE, timeout=1).group(1))
    api_url = f"{ui_url}/api"
    assert f"export PREFECT_API_URL={api_url}" in demo.output
    # Every duty ran against that server, not a temporary one of its own.
    assert "Starting temporary server" not in demo.output, demo.tail()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api_url}/flows/filter", json={}, timeout=10).json()}
    runs = [run for run in httpx.post(f"{api_url}/flow_runs/filter", json={"limit": 200}, timeout=10).json()
            if run["deployment_id"] is None]  # `maint run`'s, not runs the scheduler plans for the deployments
    # backup twice, verification of two stores (and of the offsite copy on S3 when moto is installed), a dry run
    offsite = ["backup-verification"] if "S3 (moto):" in demo.output else []
    assert sorted(flows[run["flow_id"]] for run in runs) == sorted(
        [*DUTIES, "backup", "backup-verification", *offsite, "vacuum"]), runs
    # The corrupted copy's critical report ends its run Failed; every other run Completed.
    assert sorted(run["state_type"] for run in runs) == ["COMPLETED"] * (len(runs) - 1) + ["FAILED"], runs

    # `maint serve` registers the deployments once the line is out: poll until all are there.
    crons = tomllib.loads((workdir / "maint.toml").read_text())["schedules"]
    assert set(crons) == set(DUTIES), "the demo's configuration should schedule every duty"

    def deployments():
        found = httpx.post(f"{api_url}/deployments/filter", json={}, timeout=10).json()
        return found if {d["name"] for d in found} == set(DUTIES) else None
    served = wait_for(deployments, timeout=60, interval=0.2, what=lambda: f"the demo's deployments\n{demo.tail()}")
    assert {d["name"]: [s["schedule"]["cron"] for s in d["schedules"]] for d in served} == \
        {name: [cron] for name, cron in crons.items()}
    wait_for(lambda: (found := deployments()) and all(d["status"] == "READY" for d in found), timeout=60,
             interval=0.2, what="every deployment READY (polled by the served runner)")
    page = httpx.get(ui_url, timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:200]

    demo.note_what_it_started(postgres_port)
    assert len(demo.started) >= 2, demo.started  # at least the Prefect server and the postmaster
    demo.process.send_signal(signal.SIGINT)
    try:
        code = demo.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"maint demo --ui still running 120s after Ctrl-C:\n{demo.tail()}", pytrace=False)
    assert code == 0, demo.tail()
    assert "every duty behaved as expected" in demo.output, demo.tail()
    assert demo.output.index("== stopping PostgreSQL") < demo.output.index("== stopping the Prefect server")

    assert not _accepts_connections(prefect_port), "the Prefect server still answers after the demo exited"
    assert not _accepts_connections(postgres_port), "PostgreSQL still answers after the demo exited"
    left = {pid: _command_line(pid) for pid in demo.still_alive()}
    assert not left, f"left behind: {left}"
