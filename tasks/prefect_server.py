"""A real Prefect server (`prefect server start`) on loopback with a home of its own: for
`maint demo --ui`, the tests where schedules, workers or automations matter, and the benchmarks.
Never for production (there, run Prefect's server as the README's systemd units do)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from maint.tasks.environment import free_port


def prefect_program() -> str:
    """The `prefect` command of this interpreter's environment (a venv's bin/ need not be on PATH)."""
    beside = Path(sys.executable).with_name("prefect")
    return str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")


class LocalPrefectServer:
    """`prefect server start` on 127.0.0.1 and a free port, its SQLite database under `home`."""

    def __init__(self, home: Path, port: int | None = None):
        self.home = Path(home)
        self.port = port or free_port()
        self.log_path = self.home / "server.log"
        self._process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for processes that talk to this server (maint, a worker)."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_API_URL=self.api_url, PREFECT_UI_URL=self.ui_url, PREFECT_HOME=str(self.home / "client"),
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
        return env

    def start(self, timeout: float = 120.0) -> "LocalPrefectServer":
        self.home.mkdir(parents=True, exist_ok=True)
        env = self.client_env()
        env.pop("PREFECT_API_URL")
        env.update(PREFECT_HOME=str(self.home), PREFECT_UI_API_URL=self.api_url,
                   PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(self.port))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [prefect_program(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.home, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prefect server did not answer on {self.api_url} within {timeout:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)  # its services run in child processes too
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> "LocalPrefectServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
