"""deploy/ for Kubernetes: the flow-run image's install script, run for real; the Dockerfile that
runs it, the work pool's base job template as the worker renders it, the health check's RBAC,
the prefect-worker chart's values and README's commands, checked as files.

No base image can be pulled here, so the Dockerfile is never built. What it installs comes from
deploy/image/install.sh alone: the systems fixture copies exactly what the Dockerfile COPYs into
an empty directory and runs the Dockerfile's own install line there (twice: it is idempotent),
and the flows tests run a duty and README's `prefect work-pool create` and `maint deploy` with
what it installed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
import yaml

from tests.conftest import forget_maint, prefect_api, system_fixture
from tests.k8s_server import Role, ago, container, pod, running, write_kubeconfig

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy/image/Dockerfile"
INSTALL = ROOT / "deploy/image/install.sh"
TEMPLATE = ROOT / "deploy/kubernetes/base-job-template.json"
RBAC = ROOT / "deploy/kubernetes/rbac.yaml"
VALUES = ROOT / "deploy/kubernetes/prefect-worker-values.yaml"
EXAMPLE = ROOT / "maint.example.toml"
IMAGE = "registry.example.com/acme/maint:0.1.0"
TOKEN = "flow-run-token-5e4d3c2b1a"
SECRET_WORDS = re.compile(r"passw|secret|token|key|credential|webhook|auth", re.IGNORECASE)


def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def template_defaults() -> dict:
    return {name: spec["default"] for name, spec in template()["variables"]["properties"].items() if "default" in spec}


def secret_variables() -> set[str]:
    """The environment variables maint.example.toml names in its *_env keys."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_env") and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(tomllib.loads(EXAMPLE.read_text()))
    return found


# --- the Dockerfile, read as its builder reads it ----------------------------------------------

def dockerfile_stages() -> list[types.SimpleNamespace]:
    """The stages: each with `base`, `name` and `instructions` [(INSTRUCTION, arguments)], comments
    dropped and continuation lines joined, as the builder does."""
    logical, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages = []
    for line in logical:
        instruction, _, arguments = line.strip().partition(" ")
        instruction, arguments = instruction.upper(), arguments.strip()
        if instruction == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(types.SimpleNamespace(base=words[0], name=name, instructions=[]))
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, arguments))
    return stages


def instructions(stage, kind: str) -> list[str]:
    return [arguments for instruction, arguments in stage.instructions if instruction == kind]


def install_stage():
    """The stage that runs install.sh, and its shell words."""
    for stage in dockerfile_stages():
        for run in instructions(stage, "RUN"):
            words = shlex.split(run)
            if words and words[0].endswith("deploy/image/install.sh"):
                return stage, words
    pytest.fail("no RUN of deploy/image/install.sh in deploy/image/Dockerfile")


def copy_like_the_build(destination: Path) -> None:
    """Copy what the install stage COPYs, where it COPYs it, with `destination` as its WORKDIR."""
    stage, _ = install_stage()
    [workdir] = instructions(stage, "WORKDIR")
    for copy in instructions(stage, "COPY"):
        *sources, target = shlex.split(copy)
        assert not any(s.startswith("--") for s in sources), f"COPY {copy}: the install stage copies from the context"
        target_path = destination / Path(target).relative_to(workdir) if target.startswith("/") else destination / target
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {copy}: {source} is not in the repository"
            if path.is_dir():
                shutil.copytree(path, target_path, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                into = target_path / path.name if target.endswith("/") or len(sources) > 1 else target_path
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)


def test_the_image_is_python_3_11_with_postgresql_client_15_or_newer_as_a_numeric_non_root_user():
    stages = dockerfile_stages()
    names = {s.name for s in stages if s.name}
    assert stages[0].base.startswith("python:3.11-"), stages[0].base
    assert all(s.base == stages[0].base or s.base in names for s in stages), "every stage is the pinned base or a stage"
    [base] = [s for s in stages if s.base == stages[0].base]

    [pg_major] = [a.split("=", 1)[1] for a in instructions(base, "ARG") if a.startswith("PG_MAJOR=")]
    assert int(pg_major) >= 15
    runs = " ".join(instructions(base, "RUN"))
    assert re.search(r"apt-get install -y --no-install-recommends \"?postgresql-client-\$\{?PG_MAJOR\}?\"?", runs), runs

    final = stages[-1]
    users = instructions(final, "USER")
    assert users and users[-1].isdigit() and int(users[-1]) != 0, f"the image runs as USER {users}: numeric, not root"
    assert f"--uid {users[-1]} " in runs, "the user it runs as is created in the base image (its home exists)"
    assert [i for i, _ in final.instructions].index("USER") > [i for i, _ in final.instructions].index("COPY")


def test_the_image_installs_with_the_script_the_tests_run_from_what_pip_needs():
    stage, words = install_stage()
    assert words == ["deploy/image/install.sh", "/opt/maint", "/src"], words
    assert instructions(stage, "WORKDIR") == ["/src"]
    final = dockerfile_stages()[-1]
    assert f"--from={stage.name} /opt/maint /opt/maint" in instructions(final, "COPY")
    [env] = instructions(final, "ENV")
    assert "PATH=/opt/maint/bin:$PATH" in shlex.split(env), "the worker's `prefect flow-run execute` is found on PATH"

    # The COPYs hold what pip needs to build maint: pyproject.toml, its readme, every package folder.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {source.rstrip("/") for copy in instructions(stage, "COPY") for source in shlex.split(copy)[:-1]}
    needed = {"pyproject.toml", pyproject["project"]["readme"], "deploy/image/install.sh",
              *pyproject["tool"]["setuptools"]["package-dir"].values()}
    assert needed <= copied, f"not copied into the build: {sorted(needed - copied)}"


def test_the_image_leaves_the_command_to_the_worker_and_holds_no_secret_or_configuration():
    stages = dockerfile_stages()
    everything = [(i, a) for s in stages for i, a in s.instructions]
    assert not [i for i, _ in everything if i in ("ENTRYPOINT", "CMD")], \
        "an ENTRYPOINT would be put before the worker's args; a CMD means nothing under it"
    for instruction, arguments in everything:
        if instruction in ("ENV", "ARG"):
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                assert not SECRET_WORDS.search(name) and not SECRET_WORDS.search(value), f"{instruction} {word}"
                assert name != "MAINT_CONFIG", "the configuration is the pod's (a ConfigMap), not the image's"
        if instruction == "COPY" and not arguments.startswith("--from"):
            for source in shlex.split(arguments)[:-1]:
                assert source == "pyproject.toml" or not source.endswith((".toml", ".env")), f"COPY {arguments}"


# --- install.sh ------------------------------------------------------------------------------------

@system_fixture(scope="module")  # pip builds and installs maint: a systems fixture
def installed_maint(tmp_path_factory):
    """maint installed by deploy/image/install.sh into an empty directory, from a copy of exactly
    what the Dockerfile COPYs, by its own install line (/src and /opt/maint moved here), twice.
    pip is held to the versions of this test run's venv, so the installed client talks to the
    suite's Prefect server in its own version."""
    where = tmp_path_factory.mktemp("image")
    source, prefix = where / "src", where / "opt-maint"
    copy_like_the_build(source)
    _, words = install_stage()
    command = [str(source / words[0]), *(str(prefix) if w == "/opt/maint" else str(source) if w == "/src" else w
                                         for w in words[1:])]
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--exclude", "maint"],
                            capture_output=True, text=True, check=True).stdout
    pins = [line for line in frozen.splitlines() if re.fullmatch(r"[A-Za-z0-9._-]+==[^\s;@]+", line)]
    (where / "constraints.txt").write_text("\n".join(pins) + "\n")
    env = {**os.environ, "PIP_CONSTRAINT": " ".join(filter(None, [os.environ.get("PIP_CONSTRAINT"),
                                                                   str(where / "constraints.txt")]))}
    outputs = []
    for _ in range(2):
        done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        outputs.append(done.stdout)
    return types.SimpleNamespace(prefix=prefix, bin=prefix / "bin", outputs=outputs)


def test_install_sh_installs_maint_into_a_fresh_directory_and_again_over_it(installed_maint):
    from importlib.metadata import version

    for output in installed_maint.outputs:
        assert f"install.sh: installed into {installed_maint.prefix}: maint {version('maint')}, " \
               f"prefect {version('prefect')}, Python 3." in output, output
        assert "usage: maint" in output and "pg_dump (PostgreSQL) " in output and "pg_restore (PostgreSQL) " in output
    listed = subprocess.run([str(installed_maint.bin / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, check=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"maint", "prefect", "psycopg", "kubernetes", "google-cloud-storage"} <= names
    assert not names & {"pytest", "trustme", "prefect-kubernetes"}, "the test extra is not in the image"
    where = subprocess.run([str(installed_maint.bin / "python"), "-c", "import maint.flows; print(maint.flows.__file__)"],
                           capture_output=True, text=True, check=True, cwd="/")
    assert where.stdout.startswith(str(installed_maint.prefix / "lib")), "installed, not a link to the source"


def _path_without_postgresql(tmp_path: Path, fake_pg_version: str | None) -> str:
    """A PATH holding python3 and the few programs install.sh runs, and pg_dump/pg_restore only as
    stand-ins of an old version when asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(Path(sys.base_prefix) / "bin" / "python3", bin_dir / "python3")  # the interpreter, not a shim
    for program in ("sed", "dirname"):
        os.symlink(shutil.which(program), bin_dir / program)
    if fake_pg_version:
        for program in ("pg_dump", "pg_restore"):
            (bin_dir / program).write_text(f"#!/bin/sh\necho '{program} (PostgreSQL) {fake_pg_version}'\n")
            (bin_dir / program).chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize("fake_pg_version, expected", [
    (None, ["pg_dump: not found on PATH; install the PostgreSQL client programs, version 15 or newer",
            "pg_restore: not found on PATH"]),
    ("14.11 (Debian 14.11-1.pgdg120+2)", ["pg_dump (PostgreSQL) 14.11 (Debian 14.11-1.pgdg120+2)'; maint needs the "
                                          "PostgreSQL client programs 15 or newer", "pg_restore (PostgreSQL) 14.11"]),
])
def test_install_sh_names_what_is_missing_before_writing_anything(tmp_path, fake_pg_version, expected):
    prefix = tmp_path / "opt-maint"
    result = subprocess.run(["/bin/bash", str(INSTALL), str(prefix)], capture_output=True, text=True, timeout=60,
                            env={"PATH": _path_without_postgresql(tmp_path, fake_pg_version), "HOME": str(tmp_path)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"install.sh: cannot install maint into {prefix}:\n"), result.stderr
    for words in expected:
        assert words in result.stderr, result.stderr
    assert not prefix.exists(), "nothing is written when something is missing"


def test_install_sh_refuses_a_directory_that_is_not_a_checkout(tmp_path):
    result = subprocess.run(["/bin/bash", str(INSTALL), str(tmp_path / "p"), str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and f"{tmp_path} has no pyproject.toml" in result.stderr, result.stderr
    usage = subprocess.run(["/bin/bash", str(INSTALL)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr


# --- the base job template, rendered as the worker renders it ----------------------------------

def render(job_variables: dict) -> dict:
    """The Job the kubernetes worker would create for a flow run with these job variables: the
    template's defaults, the variables over them, prefect-kubernetes' own job configuration (its
    validation), then its preparation for a flow run (env, labels, command). The worker also
    resolves block and variable references, which need its API client: the template has none."""
    import uuid

    from prefect.client.schemas.objects import FlowRun
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    base = template()
    values = KubernetesWorkerJobConfiguration._get_base_config_defaults(base["variables"]["properties"])
    values.update(job_variables)
    configuration = KubernetesWorkerJobConfiguration(**apply_values(base["job_configuration"], values))
    configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="brave-otter"))
    return configuration.job_manifest


def deploy_plans():
    from maint.deployments import plan_deployments
    from maint.tasks.environment import load_config

    config = load_config(EXAMPLE, check_env=False)
    return plan_deployments(config, worker_config="/etc/maint/maint.toml", job_variables={"image": IMAGE})


def round_trips(document: dict, model: str) -> None:
    """The document, read into the official client's model and written back, is unchanged: no
    misspelt or misplaced field (the model drops it) and no value of the wrong type."""
    from kubernetes import client as k8s

    api = k8s.ApiClient(k8s.Configuration())
    try:
        assert api.sanitize_for_serialization(api._ApiClient__deserialize(document, model)) == document, model
    finally:
        api.rest_client.close()


def test_the_template_has_only_placeholders_the_worker_fills_without_its_api():
    text = TEMPLATE.read_text()
    assert "prefect.blocks." not in text and "prefect.variables." not in text
    schema = template()["variables"]
    placeholders = set(re.findall(r"\{\{\s*([\w.]+)\s*\}\}", json.dumps(template()["job_configuration"])))
    assert placeholders <= set(schema["properties"]), sorted(placeholders - set(schema["properties"]))


def test_the_template_renders_to_a_job_with_the_configmap_the_secret_limits_and_a_non_root_pod():
    defaults = template_defaults()
    job = render({"image": IMAGE})
    round_trips(job, "V1Job")
    spec = job["spec"]
    pod_spec = spec["template"]["spec"]
    [box] = pod_spec["containers"]

    assert job["metadata"]["namespace"] == defaults["namespace"] == "maint"
    assert box["image"] == IMAGE and box["args"] == ["prefect", "flow-run", "execute"] and "command" not in box
    [volume] = [v for v in pod_spec["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == defaults["config_map"] == "maint-config"
    [mount] = [m for m in box["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": "/etc/maint", "readOnly": True}
    env = {e["name"]: e for e in box["env"]}
    assert env["MAINT_CONFIG"] == {"name": "MAINT_CONFIG", "value": "/etc/maint/maint.toml"}
    assert box["envFrom"] == [{"secretRef": {"name": defaults["secret_name"]}}]
    assert defaults["secret_name"] == "maint-secrets"
    # The secrets arrive only through envFrom: no entry names one, no literal value looks like one.
    assert not set(env) & secret_variables()
    assert not [e for e in box["env"] if "value" in e and SECRET_WORDS.search(e["name"])], box["env"]
    assert all(set(e) <= {"name", "value"} for e in box["env"]), "no valueFrom is needed: envFrom takes the Secret"

    assert box["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    assert pod_spec["serviceAccountName"] == defaults["service_account_name"] == "maint-flow-runs"
    assert spec["ttlSecondsAfterFinished"] == defaults["finished_job_ttl"] == 86400
    assert box["securityContext"]["runAsNonRoot"] is True and box["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod_spec["restartPolicy"] == "Never" and spec["backoffLimit"] == 0


def test_every_duty_s_job_variables_validate_against_the_template_and_render():
    import jsonschema

    schema = template()["variables"]
    validator = jsonschema.Draft202012Validator(schema)
    plans = deploy_plans()
    assert {p.duty.name for p in plans} >= {"backup", "restore-test", "dr-drill", "health-check"}
    for plan in plans:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(plan.job_variables)]
        assert not errors, (plan.duty.name, errors)
        job = render(plan.job_variables)
        [box] = job["spec"]["template"]["spec"]["containers"]
        assert box["image"] == IMAGE
        assert {"name": "MAINT_CONFIG", "value": "/etc/maint/maint.toml"} in box["env"]
        if plan.duty.name in ("restore-test", "dr-drill"):  # maint.example.toml's [deploy.job_variables.*]
            assert box["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    assert list(validator.iter_errors({"memory_limit": 4, "backoff_limit": -1})), "the schema refuses bad values"


# --- RBAC ------------------------------------------------------------------------------------------

def rbac_documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


def granted_by_rbac() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) for every rule of the file's roles."""
    return {(group, resource, verb) for d in rbac_documents() if d["kind"] in ("ClusterRole", "Role")
            for rule in d["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


NODES_ROLE = "maint-health-check-nodes"
NODE_RULES = {("", "nodes", "list"), ("metrics.k8s.io", "nodes", "list")}  # kubectl get nodes, kubectl top nodes


def rules_of(document: dict) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in document["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_rbac_grants_the_flow_run_service_account_reading_pods_and_nodes_and_nothing_more():
    documents = rbac_documents()
    models = {"Namespace": "V1Namespace", "ServiceAccount": "V1ServiceAccount", "ClusterRole": "V1ClusterRole",
              "Role": "V1Role", "RoleBinding": "V1RoleBinding", "ClusterRoleBinding": "V1ClusterRoleBinding"}
    assert {d["kind"] for d in documents} <= set(models)
    for document in documents:
        round_trips(document, models[document["kind"]])
    # Cluster-wide: exactly one binding, of the nodes ClusterRole, which reads nodes and their usage only.
    [cluster_binding] = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
    assert cluster_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": NODES_ROLE}
    [nodes_role] = [d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"] == NODES_ROLE]
    assert rules_of(nodes_role) == NODE_RULES
    assert all(b["roleRef"]["name"] != NODES_ROLE for b in documents if b["kind"] == "RoleBinding"), \
        "nodes are cluster-scoped: a RoleBinding of the nodes role grants nothing"

    defaults = template_defaults()
    [account] = [d for d in documents if d["kind"] == "ServiceAccount"]
    assert (account["metadata"]["name"], account["metadata"]["namespace"]) == \
        (defaults["service_account_name"], defaults["namespace"])
    assert [d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"] == [defaults["namespace"]]

    for group, resource, verb in granted_by_rbac():
        assert verb in ("get", "list", "watch"), f"{verb} on {resource}: read only"
    namespaced = {rule for d in documents if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"] != NODES_ROLE
                  for rule in rules_of(d)}
    for group, resource, _ in namespaced:
        assert (group, resource) in (("", "pods"), ("", "namespaces")), f"{resource}: only what the health check reads"
    assert not [d for d in documents if d["kind"] in ("ClusterRole", "Role")
                for rule in d["rules"] if "resourceNames" in rule or "nonResourceURLs" in rule]

    roles = {(d["kind"], d["metadata"]["name"]) for d in documents if d["kind"] in ("ClusterRole", "Role")}
    bindings = [d for d in documents if d["kind"] == "RoleBinding"]
    for binding in bindings + [cluster_binding]:
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": defaults["service_account_name"],
                                        "namespace": defaults["namespace"]}]
    watched = tomllib.loads(EXAMPLE.read_text())["health_check"]["kubernetes"]["namespaces"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(watched), \
        "one RoleBinding per namespace maint.example.toml's health check watches"


def rbac_as_role() -> Role:
    """rbac.yaml as the API stand-in plays it: the RoleBinding-bound ClusterRole's rules inside
    each namespace, the ClusterRoleBinding-bound one's at the cluster scope."""
    documents = rbac_documents()
    roles = {d["metadata"]["name"]: d for d in documents if d["kind"] in ("ClusterRole", "Role")}

    def grants(kind: str) -> dict[str, frozenset[str]]:
        granted: dict[str, set[str]] = {}
        for binding in (d for d in documents if d["kind"] == kind):
            for group, resource, verb in rules_of(roles[binding["roleRef"]["name"]]):
                key = resource if kind == "RoleBinding" or not group else f"{resource}.{group}"
                granted.setdefault(key, set()).add(verb)
        return {key: frozenset(verbs) for key, verbs in granted.items()}
    return Role("system:serviceaccount:maint:maint-flow-runs", grants("RoleBinding"), grants("ClusterRoleBinding"))


def test_rbac_is_enough_for_the_pods_and_the_nodes_through_the_client(kube_api, tmp_path, monkeypatch):
    from maint.tasks.kubernetes import list_nodes, list_pods
    from tests.k8s_server import node_metrics

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    shop = [pod("web-7d4b9c6f5d-x2x7q", namespace="shop", phase="Running",
                containers=[container("web", running(ago(hours=2)), ready=True)])]
    with kube_api({"shop": shop}, token="admin", roles={TOKEN: rbac_as_role()},
                  metrics=[node_metrics("worker-1")]) as api:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", {"prod": (api.url, TOKEN)})))
        assert [p.name for p in list_pods(["shop"])] == ["web-7d4b9c6f5d-x2x7q"]
        listed = list_nodes()
    assert len(listed.nodes) == 1 and len(listed.metrics) == 1
    assert all(code == 200 for _, code in api.answers)
    assert {api_call(r) for r in api.requests} >= NODE_RULES


def api_call(request) -> tuple[str, str, str]:
    """(API group, resource, verb) of a request, as the API server's authorizer sees it."""
    parts = request.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[0] == "namespaces" and len(rest) >= 3:
        resource, name = rest[2], (rest[3] if len(rest) > 3 else None)
    else:
        resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
    verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[request.method]
    if verb == "get" and name is None:
        verb = "watch" if request.query.get("watch") in ("1", "true") else "list"
    return group, resource, verb


def test_the_installed_maint_runs_the_health_check_calling_exactly_what_rbac_grants(
        installed_maint, prefect_server, kube_api, httpserver, tmp_path):
    httpserver.expect_request("/healthz").respond_with_data("ok")
    shop = [pod("web-7d4b9c6f5d-x2x7q", namespace="shop", phase="Running",
                containers=[container("web", running(ago(hours=2)), ready=True)])]
    config = tmp_path / "maint.toml"
    config.write_text(f"""
[[health_check.endpoints]]
url = "{httpserver.url_for('/healthz')}"

[health_check.kubernetes]
namespaces = ["shop", "empty"]
""")
    with kube_api({"shop": shop, "empty": []}, token=TOKEN) as api:
        env = prefect_server.client_env({**os.environ, "HOME": str(tmp_path),
                                         "KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig",
                                                                            {"prod": (api.url, TOKEN)}))})
        env.pop("KUBERNETES_SERVICE_HOST", None)
        result = subprocess.run([str(installed_maint.bin / "maint"), "--config", str(config), "run", "health-check",
                                 "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["duty"], report["status"]) == ("health-check", "ok"), report
    subjects = " ".join(f["subject"] for f in report["findings"])
    assert httpserver.url_for("/healthz") in subjects and "shop" in subjects and "empty" in subjects, report

    # What a flow-run pod's service account must be allowed, seen from the API's side.
    calls = {api_call(r) for r in api.requests}
    assert calls == granted_by_rbac(), f"called {sorted(calls)}; rbac.yaml grants {sorted(granted_by_rbac())}"


# --- the chart's values and README's commands ------------------------------------------------------

def readme_commands() -> list[list[str]]:
    """The shell commands of README's "### On Kubernetes" block, in order, as words."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### On Kubernetes", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()
            if shlex.split(line, comments=True)]


def readme_command(*prefix: str, containing: str | None = None) -> list[str]:
    [found] = [words for words in readme_commands()
               if words[:len(prefix)] == list(prefix) and (containing is None or containing in words)]
    return found


def option(words: list[str], name: str) -> str:
    for index, word in enumerate(words):
        if word == name:
            return words[index + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    pytest.fail(f"{name} not in {shlex.join(words)}")


def test_readme_goes_from_an_empty_cluster_to_scheduled_runs_in_order():
    commands = readme_commands()
    steps = [("docker", "build"), ("docker", "push"), ("kubectl", "apply"), ("kubectl", "-n", "maint", "create",
             "configmap"), ("kubectl", "-n", "maint", "create", "secret"), ("prefect", "work-pool", "create"),
             ("helm", "repo", "add"), ("helm", "install"), ("maint", "--config")]
    positions = []
    for step in steps:
        found = [i for i, words in enumerate(commands) if tuple(words[:len(step)]) == step]
        assert found, f"README's block has no `{' '.join(step)}`"
        positions.append(found[-1] if step[0] == "maint" else found[0])
    assert positions == sorted(positions), [" ".join(c[:4]) for c in commands]
    assert "deploy" in commands[-1] and commands[-1][0] == "maint", "it ends with the deployments"

    defaults = template_defaults()
    build = readme_command("docker", "build")
    assert option(build, "-f") == "deploy/image/Dockerfile" and build[-1] == "."
    assert readme_command("kubectl", "apply") == ["kubectl", "apply", "-f", "deploy/kubernetes/rbac.yaml"]
    configmap = readme_command("kubectl", "-n", defaults["namespace"], "create", "configmap")
    assert configmap[5] == defaults["config_map"]
    assert option(configmap, "--from-file").split("=")[0] == Path(template()["job_configuration"]["job_manifest"]
        ["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]).name == "maint.toml"
    secret = readme_command("kubectl", "-n", defaults["namespace"], "create", "secret", "generic")
    assert secret[6] == defaults["secret_name"] and option(secret, "--from-env-file")
    create = readme_command("prefect", "work-pool", "create")
    assert option(create, "--type") == "kubernetes" and option(create, "--base-job-template") == \
        "deploy/kubernetes/base-job-template.json"
    deploy = readme_command("maint", containing="deploy")
    assert option(deploy, "--pool") == create[3] and option(deploy, "--image") == option(build, "-t")
    assert option(deploy, "--worker-config") == "/etc/maint/maint.toml"


def test_the_worker_s_values_name_the_pool_the_readme_creates_and_take_the_template_file():
    import prefect

    values = yaml.safe_load(VALUES.read_text())
    worker = values["worker"]
    create = readme_command("prefect", "work-pool", "create")
    assert (worker["config"]["workPool"], worker["config"]["type"]) == (create[3], option(create, "--type"))
    assert worker["apiConfig"] == "selfHostedServer" and worker["selfHostedServerApiConfig"]["apiUrl"].endswith("/api")
    for kind in ("requests", "limits"):
        assert set(worker["resources"][kind]) == {"cpu", "memory"}, worker["resources"]
    assert values["serviceAccount"]["create"] and values["role"]["create"] and values["rolebinding"]["create"]
    assert worker["image"]["prefectTag"] == f"{prefect.__version__}-python3.11-kubernetes", \
        "the worker runs the Prefect that maint is tested with"

    # The template is not copied into the values: README's helm install hands the chart the file.
    assert "baseJobTemplate" not in worker["config"]
    install = readme_command("helm", "install", "prefect-worker")
    assert install[3] == "prefect/prefect-worker"
    assert option(install, "-f") == "deploy/kubernetes/prefect-worker-values.yaml"
    assert option(install, "--set-file") == "worker.config.baseJobTemplate.configuration=" \
                                            "deploy/kubernetes/base-job-template.json"
    assert option(install, "--namespace") == template_defaults()["namespace"]
    # The observer watches only the namespace its Role covers (cluster-wide, a real API refuses it).
    observer = {e["name"]: e["value"] for e in worker.get("extraEnvVars", [])}
    assert observer.get("PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES") == template_defaults()["namespace"]
    assert f"version {option(install, '--version')})" in VALUES.read_text(), "the chart version the values were read from"
    for words in readme_commands():
        for word in words:
            for path in re.findall(r"deploy/[\w./-]+", word):
                assert (ROOT / path).exists(), f"README names {path}, which is not in the repository"


def test_the_readme_makes_the_pool_and_deploys_every_duty_with_the_image(installed_maint, prefect_server, tmp_path):
    import jsonschema

    config = tmp_path / "maint.toml"  # the example, without [notify]: no automation here may page anyone
    example = EXAMPLE.read_text()
    config.write_text(example[:example.index("[notify]")] + example[example.index("[[databases]]"):])
    env = prefect_server.client_env({**os.environ, "HOME": str(tmp_path)})
    create, deploy = readme_command("prefect", "work-pool", "create"), readme_command("maint", containing="deploy")
    deploy[2] = str(config)
    try:
        made = subprocess.run([str(installed_maint.bin / "prefect"), *create[1:]], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180)
        assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
        deployed = subprocess.run([str(installed_maint.bin / "maint"), *deploy[1:]], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-3000:]
        with prefect_api(prefect_server) as client:
            pool = client.read_work_pool(create[3])
            deployments = client.read_deployments()
    finally:
        forget_maint(prefect_server)
    assert pool.type == "kubernetes" and pool.base_job_template == template()
    validator = jsonschema.Draft202012Validator(pool.base_job_template["variables"])
    assert len(deployments) == len(deploy_plans())
    for deployment in deployments:
        assert deployment.work_pool_name == create[3]
        assert deployment.job_variables["image"] == option(deploy, "--image")
        assert not list(validator.iter_errors(deployment.job_variables))
        [box] = render(deployment.job_variables)["spec"]["template"]["spec"]["containers"]
        assert box["image"] == option(deploy, "--image")
