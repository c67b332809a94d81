"""The systemd units of deploy/systemd (README, "Running it in production"): they run commands the
installed package has, with options those commands take, on one pool and one server address, with
the secrets only in EnvironmentFile; and `systemd-analyze verify` accepts them as installed."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import system_fixture

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "deploy" / "systemd"
PREFIX = "/opt/maint/bin/"  # where the README installs maint's venv
SERVICES = ("prefect-server.service", "maint-worker.service", "maint-deploy.service")
UNIT_NAMES = (*SERVICES, "maint-deploy.path")
EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|WEBHOOK|ROUTING_KEY|API_KEY|CREDENTIAL", re.I)


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of (key, value) in order, repeated keys kept (configparser would keep only the last
    Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}:{number}: not a key=value line in a section: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= should be set once, found {found}"
    return found[0]


def environment(unit: dict) -> dict[str, str]:
    env = {}
    for assignments in values(unit, "Service", "Environment"):
        for assignment in shlex.split(assignments):
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


def commands(unit: dict) -> list[list[str]]:
    found = []
    for key in EXEC_KEYS:
        for line in values(unit, "Service", key):
            argv = shlex.split(line)
            argv[0] = argv[0].lstrip("-@:+!")  # systemd's prefixes: ignore failure, argv0, privileges
            found.append(argv)
    return found


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} should be given once in {shlex.join(argv)}"
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def units() -> dict[str, dict]:
    present = sorted(p.name for p in UNITS.iterdir())
    assert present == sorted(UNIT_NAMES), f"deploy/systemd holds {present}"
    return {name: parse_unit(UNITS / name) for name in UNIT_NAMES}


def _exec_start(units, name: str) -> list[str]:
    return shlex.split(one(units[name], "Service", "ExecStart"))


def test_the_units_run_commands_the_installed_package_has(units):
    scripts = {ep.name: ep.dist.name.lower() for ep in importlib.metadata.entry_points(group="console_scripts")}
    for name in SERVICES:
        for argv in commands(units[name]):
            assert argv[0].startswith("/"), f"{name}: {argv[0]} is not an absolute path"
            if argv[0].startswith(PREFIX):
                program = argv[0][len(PREFIX):]
                assert scripts.get(program) in ("maint", "prefect"), \
                    f"{name}: {argv[0]}: neither maint nor prefect installs a `{program}` command"

    server, worker, deploy = (_exec_start(units, name) for name in SERVICES)
    assert server[:3] == [f"{PREFIX}prefect", "server", "start"] and option(server, "--host") == "127.0.0.1"
    assert worker[:3] == [f"{PREFIX}prefect", "worker", "start"] and option(worker, "--type") == "process"
    assert deploy[0] == f"{PREFIX}maint"
    from maint.cli import build_parser

    args = build_parser().parse_args(deploy[1:])  # maint's own parser: exits 3 on an unknown option
    assert args.command == "deploy" and args.image is None
    assert args.pool == option(worker, "--pool"), "the worker polls another pool than `maint deploy` fills"


def test_worker_and_deploy_talk_to_the_server_unit_and_read_one_configuration(units):
    server = _exec_start(units, "prefect-server.service")
    api_url = f"http://{option(server, '--host')}:{option(server, '--port')}/api"
    configs = set()
    for name in ("maint-worker.service", "maint-deploy.service"):
        unit = units[name]
        env = environment(unit)
        assert env["PREFECT_API_URL"] == api_url, name
        configs.add(env["MAINT_CONFIG"])
        for key in ("Wants", "After"):
            assert "prefect-server.service" in " ".join(values(unit, "Unit", key)).split(), f"{name}: {key}="
    assert len(configs) == 1, f"the worker and `maint deploy` read different files: {configs}"
    path = units["maint-deploy.path"]
    assert configs <= set(values(path, "Path", "PathChanged")), "maint-deploy.path does not watch MAINT_CONFIG"
    assert one(path, "Path", "Unit") == "maint-deploy.service"
    assert one(units["maint-deploy.service"], "Service", "Type") == "oneshot"
    for name in ("prefect-server.service", "maint-worker.service"):
        assert one(units[name], "Service", "Restart") == "always", name


def test_secrets_come_only_from_environment_files(units):
    example = tomllib.loads((REPO / "maint.example.toml").read_text())

    def secret_variables(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_env") and isinstance(value, str) and value:
                    yield value
                else:
                    yield from secret_variables(value)
        elif isinstance(node, list):
            for item in node:
                yield from secret_variables(item)
    named = set(secret_variables(example))
    assert {"MAINT_PROD_DB_PASSWORD", "MAINT_SLACK_WEBHOOK_URL", "MAINT_PAGERDUTY_ROUTING_KEY"} <= named

    for name in SERVICES:
        unit = units[name]
        env = environment(unit)
        literal = sorted(set(env) & named) + sorted(k for k in env if SECRET_WORDS.search(k))
        assert not literal, f"{name}: secrets set in the unit file itself: {literal}"
        for argv in commands(unit):
            assert not [a for a in argv if SECRET_WORDS.search(a) or re.search(r"://[^/\s]*:[^/\s]*@", a)], \
                f"{name}: a secret on a command line (visible in ps): {shlex.join(argv)}"
    for name in ("maint-worker.service", "maint-deploy.service"):  # they read the *_env variables
        assert values(units[name], "Service", "EnvironmentFile") == ["/etc/maint/secrets.env"], \
            f"{name}: the secrets file must be required (no '-'): a missing one should fail loudly"


def test_the_services_are_hardened_and_can_write_where_they_must(units):
    for name in SERVICES:
        unit = units[name]
        assert one(unit, "Service", "User") == "maint", name
        for key, wanted in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                            ("ProtectHome", "yes")):
            assert one(unit, "Service", key) == wanted, f"{name}: {key}="
        writable = [p.lstrip("-") for line in values(unit, "Service", "ReadWritePaths") for p in line.split()]
        writable += [f"/var/lib/{d}" for line in values(unit, "Service", "StateDirectory") for d in line.split()]
        for path in (environment(unit)["PREFECT_HOME"], one(unit, "Service", "WorkingDirectory")):
            assert any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable), \
                f"{name}: {path} is read-only under ProtectSystem=strict (ReadWritePaths: {writable})"


# --- the units as installed ------------------------------------------------------------------------

@system_fixture
def installed_root(tmp_path, units):
    """A filesystem root with the units in /etc/systemd/system, the host's own unit library, and
    the programs the units run: maint's from this venv at /opt/maint/bin (a copy fails if the
    venv has no such program), the others from the host."""
    root = tmp_path / "root"
    (root / "etc/systemd").mkdir(parents=True)
    shutil.copytree(UNITS, root / "etc/systemd/system")
    library = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)
    if library is not None:
        shutil.copytree(library, root / "usr/lib/systemd/system", symlinks=True)
    for name in SERVICES:
        for argv in commands(units[name]):
            target = root / argv[0].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if argv[0].startswith(PREFIX):
                source = Path(sys.executable).parent / argv[0][len(PREFIX):]
            else:
                source = Path(argv[0])
                assert source.exists(), f"{name} runs {argv[0]}, which this machine lacks (README: install it)"
            shutil.copy2(source, target)
    return root


def test_the_prefect_commands_take_the_options_the_units_give(units, installed_root):
    for name in ("prefect-server.service", "maint-worker.service"):
        argv = _exec_start(units, name)
        program = [str(installed_root / argv[0].lstrip("/")), *argv[1:3]]
        shown = subprocess.run([*program, "--help"], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "COLUMNS": "200"})
        assert shown.returncode == 0, shown.stderr
        for word in argv[3:]:
            if word.startswith("--"):
                assert re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", shown.stdout), \
                    f"{name}: `{shlex.join(argv[:3])}` has no option {word}:\n{shown.stdout}"


def test_systemd_analyze_verify_accepts_the_units(installed_root):
    # Debian's systemd package; .ci/run installs it where it is missing.
    assert shutil.which("systemd-analyze"), "systemd-analyze is not on PATH: apt-get install systemd"
    # Unknown keys and unparsable values are only warnings (exit 0): any output is a failure.
    result = subprocess.run(["systemd-analyze", "verify", f"--root={installed_root}", "--man=no", "--generators=no",
                             *(str(installed_root / "etc/systemd/system" / name) for name in UNIT_NAMES)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
