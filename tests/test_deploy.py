"""The container image and deployment examples agree with the code they deploy.

Pure file checks (no Docker engine or cluster here): the Dockerfile is parsed, every YAML under
deploy/ is loaded, and each is compared with what jackfield itself defines: the settings and
their defaults, the package extras, the supported Python, the CLI's subcommands and the config
layout it reads. The image's healthcheck command and the workflow's annotation step are run.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from jackfield.cli import build_parser
from jackfield.core.desired import build_snapshot
from jackfield.core.expansion import expand
from jackfield.settings import Settings
from jackfield.shell.sources import scan

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())


def default(name: str) -> Any:
    return Settings.model_fields[name].default


STATUS_PORT: int = default("status_port")
HUB_PORT: int = default("hub_port")
SHUTDOWN_GRACE: float = default("shutdown_grace")


def env_name(field_name: str) -> str:
    """The environment variable a setting is read from."""
    alias = Settings.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        assert isinstance(first, str)
        return first
    return f"JACKFIELD_{field_name.upper()}"


SETTINGS_ENV = {env_name(n) for n in Settings.model_fields}


# --- Dockerfile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str]:
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), f"line {self.line}: not the exec (JSON) form"
        return [str(p) for p in parsed]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in self.all("ENV"):
            for pair in shlex.split(i.value):
                key, sep, value = pair.partition("=")
                assert sep, f"line {i.line}: use ENV KEY=VALUE"
                out[key] = value
        return out

    def args(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in self.all("ARG"):
            key, _, value = i.value.partition("=")
            out[key.strip()] = value.strip().strip('"')
        return out


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage; `\\` continues a line, comment lines are dropped (also inside a
    continued instruction, as Docker does)."""
    stages: list[Stage] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        joined = (pending + stripped).strip()
        pending = ""
        keyword, _, value = joined.partition(" ")
        instruction = Instruction(keyword.upper(), value.strip(), start)
        if instruction.keyword == "FROM":
            parts = instruction.value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages or instruction.keyword == "ARG", f"line {start}: before any FROM"
            if stages:
                stages[-1].instructions.append(instruction)
    assert not pending, "the Dockerfile ends inside a continued line"
    return stages


STAGES = parse_dockerfile((REPO / "Dockerfile").read_text())
FINAL = STAGES[-1]
BUILDER = next(s for s in STAGES if s.name == "builder")


def image_uid() -> int:
    user = FINAL.last("USER").value.split(":")[0]
    assert user.isdigit(), "USER must be numeric so Kubernetes' runAsNonRoot can verify it"
    return int(user)


def test_the_final_stage_runs_as_a_non_root_user_that_exists() -> None:
    uid = image_uid()
    assert uid != 0
    creates = " ".join(i.value for i in FINAL.all("RUN"))
    assert f"--uid {uid}" in creates, "the USER's uid is never created (useradd --uid)"


def test_tini_is_pid_1_and_runs_jackfield() -> None:
    entrypoint = FINAL.last("ENTRYPOINT").exec_form()
    assert entrypoint[0] == "tini" and entrypoint[1] == "--"
    assert entrypoint[2:] == ["jackfield"], "tini must run the console script itself"
    assert "-g" not in entrypoint, "signals go to jackfield, which closes its servers itself"
    assert FINAL.last("CMD").exec_form() == ["run"]
    assert FINAL.last("STOPSIGNAL").value == "SIGTERM"
    installs = " ".join(i.value for i in FINAL.all("RUN"))
    assert re.search(r"apt-get install[^&]*\btini\b", installs), "tini is not installed"


def test_the_healthcheck_probes_healthz_on_the_default_status_port() -> None:
    health = FINAL.last("HEALTHCHECK").value
    _, _, command = health.partition("CMD ")
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "no curl in the slim image: Python does the request"
    code = argv[2]
    assert "/healthz" in code and "127.0.0.1" in code
    assert f"'{STATUS_PORT}'" in code, "the fallback port is not the settings default"
    assert FINAL.env()["JACKFIELD_STATUS_PORT"] == str(STATUS_PORT)


class _Probe(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[tuple[int, type[_Probe]]]:
    class Handler(_Probe):
        status = 200
        paths: list[str] = []

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_healthcheck_command_passes_on_200_and_fails_otherwise(
    probe_server: tuple[int, type[_Probe]], status: int, healthy: bool
) -> None:
    port, handler = probe_server
    handler.status = status
    _, _, command = FINAL.last("HEALTHCHECK").value.partition("CMD ")
    code = json.loads(command)[2]
    env = {**os.environ, "JACKFIELD_STATUS_PORT": str(port)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, timeout=30, check=False
    )
    assert (done.returncode == 0) is healthy, done.stderr.decode()
    assert handler.paths == ["/healthz"]


def test_the_status_port_is_exposed_and_the_hub_is_not() -> None:
    exposed = {p.split("/")[0] for i in FINAL.all("EXPOSE") for p in i.value.split()}
    assert str(STATUS_PORT) in exposed
    assert str(HUB_PORT) not in exposed, "the hub is for the container's own job processes"


def test_the_image_installs_the_repo_as_a_wheel_with_extras_that_exist() -> None:
    run = " ".join(i.value for i in BUILDER.all("RUN"))
    assert "pip wheel --no-deps" in run and re.search(r"pip wheel [^&]* \.(\s|$)", run)
    install = re.search(r"pip install \"\$\(ls (/\S+)/jackfield-\*\.whl\)\[([^\]]+)\]\"", run)
    assert install, "the install step must install the built wheel with extras"
    extras_text = install.group(2)
    for name, value in BUILDER.args().items():
        extras_text = extras_text.replace(f"${{{name}}}", value)
    extras = {e.strip() for e in extras_text.split(",")}
    known = set(PYPROJECT["project"]["optional-dependencies"])
    assert extras <= known, f"unknown extras {extras - known}; pyproject has {sorted(known)}"
    assert "postgres" in extras, "the image must reach PostgreSQL (JACKFIELD_DATABASE_URL)"
    assert "dev" not in extras
    venv = FINAL.env()["PATH"].split(":")[0]
    assert venv == "/opt/venv/bin" and "/opt/venv" in run
    copies = " ".join(i.value for i in FINAL.all("COPY"))
    assert "--from=builder /opt/venv /opt/venv" in copies


def test_every_python_stage_is_the_minimum_supported_python() -> None:
    minimum = re.search(r">=\s*(\d+\.\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum
    pythons = [s.base for s in STAGES if s.base.startswith("python:")]
    assert len(pythons) >= 2, "builder and final stage both come from the python image"
    for base in pythons:
        assert base.startswith(f"python:{minimum.group(1)}-"), base
    # The venv is copied between stages: its interpreter path must be the same in both.
    assert len(set(pythons)) == 1


def test_node_and_npx_come_with_the_image() -> None:
    node_stage = next(s for s in STAGES if s.base.startswith("node:"))
    assert node_stage.base.startswith("node:20")
    linked = " ".join(i.value for i in FINAL.all("RUN"))
    assert "npx-cli.js /usr/local/bin/npx" in linked
    copies = [i.value for i in FINAL.all("COPY")]
    assert any(f"--from={node_stage.name} /usr/local/bin/node" in c for c in copies)


def test_the_image_environment_is_read_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = FINAL.env()
    ours = {k: v for k, v in env.items() if k.startswith("JACKFIELD_")}
    assert set(ours) <= SETTINGS_ENV, f"not settings: {set(ours) - SETTINGS_ENV}"
    for key in os.environ:
        if key.startswith("JACKFIELD_"):
            monkeypatch.delenv(key)
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.status_host == "0.0.0.0", "probes reach the status server from outside"
    assert settings.hub_host == "127.0.0.1", "the hub stays inside the container"
    assert str(settings.config_dir) == "/config"
    assert settings.database_url.startswith("sqlite:////")  # four slashes: an absolute path
    state_dir = str(Path(settings.database_url.removeprefix("sqlite:///")).parent)
    assert FINAL.last("VOLUME").value == state_dir
    assert env["HOME"] == state_dir, "npx caches in HOME: it must be the writable volume"
    runs = " ".join(i.value for i in FINAL.all("RUN"))
    assert re.search(rf"chown \S+ {re.escape(state_dir)}", runs)


def test_the_image_labels_carry_the_package_version() -> None:
    labels = " ".join(i.value for i in FINAL.all("LABEL"))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert FINAL.args()["VERSION"] == PYPROJECT["project"]["version"]
    assert f'org.opencontainers.image.licenses="{PYPROJECT["project"]["license"]}"' in labels


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str, ignore: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent matches."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for raw in ignore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _pattern_regex(line.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            included = negate
    return included


def test_the_build_context_holds_what_the_builder_copies_and_nothing_heavy() -> None:
    ignore = (REPO / ".dockerignore").read_text()
    sources: list[str] = []
    for copy in BUILDER.all("COPY"):
        assert not copy.value.startswith("--from")
        sources += copy.value.split()[:-1]
    assert "pyproject.toml" in sources and "README.md" in sources  # readme = README.md
    for source in sources:
        target = REPO / source
        files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            if "__pycache__" in rel or ".egg-info/" in rel:
                assert not in_build_context(rel, ignore), f"{rel} is sent to the build"
            else:
                assert in_build_context(rel, ignore), f"{rel} is excluded by .dockerignore"
    for heavy in (".venv/bin/python", ".git/HEAD", ".jackfield/state.db", "tests/conftest.py"):
        assert not in_build_context(heavy, ignore), f"{heavy} is sent to the build"


# --- Kubernetes ---------------------------------------------------------------------------------


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


DEPLOY_YAML = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
DEPLOYMENTS = sorted(p for p in DEPLOY_YAML if any(d.get("kind") == "Deployment" for d in load(p)))
CONFIGMAP_DEPLOYMENT = K8S / "deployment.yaml"
GITSYNC_DEPLOYMENT = K8S / "git-sync" / "deployment.yaml"


def ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(DEPLOY).as_posix() for p in paths]


def only(path: Path, kind: str) -> dict[str, Any]:
    docs = [d for d in load(path) if d.get("kind") == kind]
    assert len(docs) == 1, f"{path}: expected one {kind}"
    return docs[0]


def pod(path: Path) -> dict[str, Any]:
    spec: dict[str, Any] = only(path, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(path: Path, name: str = "jackfield") -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod(path)["containers"] if c["name"] == name]
    assert len(found) == 1, f"{path}: no container {name}"
    return found[0]


def plain_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def mount_of(c: dict[str, Any], volume: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in c["volumeMounts"] if m["name"] == volume]
    assert len(found) == 1, f"container {c['name']} does not mount {volume}"
    return found[0]


def volume(path: Path, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [v for v in pod(path)["volumes"] if v["name"] == name]
    assert len(found) == 1, f"{path}: no volume {name}"
    return found[0]


def test_the_examples_exist() -> None:
    assert CONFIGMAP_DEPLOYMENT in DEPLOYMENTS and GITSYNC_DEPLOYMENT in DEPLOYMENTS


@pytest.mark.parametrize("path", DEPLOY_YAML, ids=ids(DEPLOY_YAML))
def test_every_manifest_names_its_kind(path: Path) -> None:
    docs = load(path)
    assert docs
    for doc in docs:
        if "services" in doc or "jobs" in doc or "groups" in doc or "rule_files" in doc:
            continue  # compose file, workflow, Prometheus rules and their promtool tests
        assert doc["apiVersion"] and doc["kind"]
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=ids(DEPLOYMENTS))
def test_probes_hit_the_status_endpoints_on_the_status_port(path: Path) -> None:
    c = container(path)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert STATUS_PORT in ports.values()

    def port_of(probe: str) -> int:
        port = c[probe]["httpGet"]["port"]
        return ports[port] if isinstance(port, str) else int(port)

    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert port_of(probe) == STATUS_PORT, probe
    env = plain_env(c)
    assert env["JACKFIELD_STATUS_HOST"] == "0.0.0.0", "the kubelet probes the pod IP"
    assert env.get("JACKFIELD_STATUS_PORT", str(STATUS_PORT)) == str(STATUS_PORT)
    assert env.get("JACKFIELD_HUB_HOST", "127.0.0.1") == "127.0.0.1"


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=ids(DEPLOYMENTS))
def test_the_container_env_names_real_settings(path: Path) -> None:
    names = {e["name"] for e in container(path).get("env", [])}
    ours = {n for n in names if n.startswith("JACKFIELD_")}
    assert ours <= SETTINGS_ENV, f"not settings: {ours - SETTINGS_ENV}"
    assert "JACKFIELD_DATABASE_URL" not in names, "it comes from the Secret (env would win)"


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=ids(DEPLOYMENTS))
def test_each_replica_is_its_pod(path: Path) -> None:
    (instance,) = [e for e in container(path)["env"] if e["name"] == "JACKFIELD_INSTANCE_ID"]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=ids(DEPLOYMENTS))
def test_the_grace_period_outlasts_the_shutdown_grace(path: Path) -> None:
    grace = float(plain_env(container(path)).get("JACKFIELD_SHUTDOWN_GRACE", SHUTDOWN_GRACE))
    assert grace == SHUTDOWN_GRACE
    assert pod(path)["terminationGracePeriodSeconds"] > grace


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=ids(DEPLOYMENTS))
def test_it_runs_as_the_image_user_with_writable_state(path: Path) -> None:
    spec, c = pod(path), container(path)
    security = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == image_uid()
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounted = {m["mountPath"] for m in c["volumeMounts"]}
    # SQLite, npx's cache (HOME) and temp files need these with a read-only root.
    assert {FINAL.last("VOLUME").value, "/tmp"} <= mounted
    assert c["args"] == FINAL.last("CMD").exec_form()


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=ids(DEPLOYMENTS))
def test_secrets_come_from_the_secret(path: Path) -> None:
    secret = only(K8S / "secret.example.yaml", "Secret")
    refs = [e["secretRef"]["name"] for e in container(path).get("envFrom", [])]
    assert refs == [secret["metadata"]["name"]]
    env = plain_env(container(path))
    assert not {"LIVEKIT_API_SECRET", "OPENAI_API_KEY"} & set(env), "no secrets inline"
    assert {"LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"} <= set(secret["stringData"])


def configmap_path(key: str) -> str:
    """Where a ConfigMap key belongs in the config dir (keys cannot hold '/')."""
    prefix = "servers.d."
    return "servers.d/" + key.removeprefix(prefix) if key.startswith(prefix) else key


def test_the_configmap_is_mounted_as_the_config_dir() -> None:
    c = container(CONFIGMAP_DEPLOYMENT)
    config = volume(CONFIGMAP_DEPLOYMENT, "config")
    mount = mount_of(c, "config")
    assert mount["mountPath"] == plain_env(c)["JACKFIELD_CONFIG_DIR"]
    assert mount["readOnly"] is True, "nothing is written to the config dir"
    assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
    configmap = only(K8S / "configmap.yaml", "ConfigMap")
    assert config["configMap"]["name"] == configmap["metadata"]["name"]
    items = {i["key"]: i["path"] for i in config["configMap"]["items"]}
    assert set(items) == set(configmap["data"]), "every key needs an item, every item a key"
    for key, path in items.items():
        assert path == configmap_path(key)


def test_the_configmap_mirrors_the_repo_config() -> None:
    data: dict[str, str] = only(K8S / "configmap.yaml", "ConfigMap")["data"]
    assert "agent.yaml" in data
    for key, text in data.items():
        path = configmap_path(key)
        assert text == (REPO / path).read_text(), f"{key} differs from {path}"


def test_the_mounted_configmap_is_a_valid_config(tmp_path: Path) -> None:
    data: dict[str, str] = only(K8S / "configmap.yaml", "ConfigMap")["data"]
    items = volume(CONFIGMAP_DEPLOYMENT, "config")["configMap"]["items"]
    for item in items:  # the layout the kubelet writes
        target = tmp_path / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])
    found = scan(tmp_path)
    assert not found.errors
    snapshot = build_snapshot(found.files, {}, found.errors)
    assert len(found.files) == len(items)
    assert snapshot.agent.name and snapshot.servers


def test_git_sync_publishes_where_jackfield_reads() -> None:
    jackfield = container(GITSYNC_DEPLOYMENT)
    sidecar = container(GITSYNC_DEPLOYMENT, "git-sync")
    (init,) = pod(GITSYNC_DEPLOYMENT)["initContainers"]
    for c in (sidecar, init):
        assert c["image"].startswith("registry.k8s.io/git-sync/git-sync:v4.")
    assert "--one-time" in init.get("args", []), "the first sync happens before jackfield starts"
    assert plain_env(init)["GITSYNC_REPO"] == plain_env(sidecar)["GITSYNC_REPO"]
    git = plain_env(sidecar)
    (shared,) = {m["name"] for m in sidecar["volumeMounts"]} & {
        m["name"] for m in jackfield["volumeMounts"]
    }
    assert "emptyDir" in volume(GITSYNC_DEPLOYMENT, shared)
    theirs, ours = mount_of(sidecar, shared), mount_of(jackfield, shared)
    assert ours["readOnly"] is True and not theirs.get("readOnly", False)
    root = Path(git["GITSYNC_ROOT"]).relative_to(theirs["mountPath"])
    link = Path(ours["mountPath"]) / root / git["GITSYNC_LINK"]
    config_dir = Path(plain_env(jackfield)["JACKFIELD_CONFIG_DIR"])
    assert config_dir == link or link in config_dir.parents
    assert config_dir.is_relative_to(ours["mountPath"])


def test_kustomization_resources_exist_and_agree() -> None:
    kustomization = only(K8S / "kustomization.yaml", "Kustomization")
    resources: list[str] = kustomization["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    assert {"configmap.yaml", "deployment.yaml", "service.yaml"} <= set(resources)
    assert "secret.example.yaml" not in resources, "secret values are never applied from git"
    # A generated, hash-suffixed ConfigMap would roll the pods on every config change.
    assert "configMapGenerator" not in kustomization


def test_the_service_reaches_the_status_port() -> None:
    service = only(K8S / "service.yaml", "Service")
    labels = only(CONFIGMAP_DEPLOYMENT, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container(CONFIGMAP_DEPLOYMENT)["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["port"] == STATUS_PORT and ports[port["targetPort"]] == STATUS_PORT


# --- compose ------------------------------------------------------------------------------------

COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_env(service: str) -> dict[str, str | None]:
    env = COMPOSE["services"][service]["environment"]
    if isinstance(env, list):
        return {k: (v if s else None) for k, s, v in (str(e).partition("=") for e in env)}
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def test_compose_runs_jackfield_on_postgres() -> None:
    services = COMPOSE["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    env = compose_env("jackfield")
    raw = env["JACKFIELD_DATABASE_URL"]
    assert raw is not None
    url = expand(raw, {})  # compose interpolation has the same ${VAR:-default} rules
    assert url.startswith("postgresql+psycopg://")
    assert urlsplit(url).hostname == "postgres"
    pg = compose_env("postgres")
    assert urlsplit(url).path == "/" + expand(pg["POSTGRES_DB"] or "", {})
    assert "postgres" in services["jackfield"]["depends_on"]
    ours = {k for k in env if k.startswith("JACKFIELD_")}
    assert ours <= SETTINGS_ENV, f"not settings: {ours - SETTINGS_ENV}"


def test_compose_mounts_the_config_and_publishes_the_status_port() -> None:
    jackfield = COMPOSE["services"]["jackfield"]
    env = compose_env("jackfield")
    assert env["JACKFIELD_STATUS_HOST"] == "0.0.0.0"
    config_dir = env["JACKFIELD_CONFIG_DIR"]
    mounts = [str(v).split(":") for v in jackfield["volumes"]]
    (config,) = [m for m in mounts if m[1] == config_dir]
    assert config[2:] == ["ro"]
    assert (DEPLOY / config[0] / "agent.yaml").is_file(), "the mount source is not a config dir"
    assert any(str(p).endswith(f":{STATUS_PORT}") for p in jackfield["ports"])
    extras = set(jackfield["build"]["args"]["JACKFIELD_EXTRAS"].split(","))
    assert "postgres" in extras and extras <= set(PYPROJECT["project"]["optional-dependencies"])
    assert (DEPLOY / jackfield["build"]["context"] / jackfield["build"]["dockerfile"]).is_file()
    grace = re.fullmatch(r"(\d+)s", jackfield["stop_grace_period"])
    assert grace and int(grace.group(1)) > SHUTDOWN_GRACE


# --- CI and hooks -------------------------------------------------------------------------------

WORKFLOW: dict[str, Any] = yaml.safe_load((DEPLOY / "github-actions" / "validate.yaml").read_text())
PRE_COMMIT: dict[str, Any] = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())


def workflow_runs() -> list[str]:
    return [
        step["run"] for job in WORKFLOW["jobs"].values() for step in job["steps"] if "run" in step
    ]


def subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("jackfield has no subcommands")


def jackfield_commands(text: str) -> list[list[str]]:
    """Every `jackfield ...` invocation in shell text, cut at pipes and lists."""
    found: list[list[str]] = []
    for line in text.splitlines():
        for part in re.split(r"\|\||&&|[|;]", line):
            argv = [Path(w).name if "/" in w else w for w in part.split()]
            if argv and argv[0] == "jackfield":
                found.append(argv)
    return found


def test_the_workflow_validates_and_checks_schemas() -> None:
    runs = "\n".join(workflow_runs())
    commands = jackfield_commands(runs)
    assert ["jackfield", "validate", "--format", "github", "."] in commands
    assert ["jackfield", "schema", "--check"] in commands
    known = subcommands()
    for command in commands:
        assert command[1] in known, command
    (setup,) = [
        s
        for job in WORKFLOW["jobs"].values()
        for s in job["steps"]
        if "setup-python" in s.get("uses", "")
    ]
    assert PYPROJECT["project"]["requires-python"] == f">={setup['with']['python-version']}"
    text = (DEPLOY / "github-actions" / "validate.yaml").read_text()
    assert re.search(r"#\s+jackfield plan \. --exit-code", text), "the optional plan step"


def test_the_workflow_turns_errors_into_annotations(tmp_path: Path) -> None:
    (step,) = [r for r in workflow_runs() if "jackfield validate" in r]
    (tmp_path / "servers.d").mkdir()
    (tmp_path / "agent.yaml").write_text((REPO / "agent.yaml").read_text())
    (tmp_path / "servers.d" / "bad.yaml").write_text(
        "apiVersion: jackfield/v1\nkind: MCPServer\nmetadata: {name: bad}\nspec:\n  comand: x\n"
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert re.search(
        r"^::error file=servers\.d/bad\.yaml,line=5,col=3,title=jackfield validate::.*comand",
        done.stdout,
        re.M,
    )


def test_pre_commit_hooks_use_commands_from_the_venv() -> None:
    hooks = [h for repo in PRE_COMMIT["repos"] for h in repo["hooks"]]
    assert {h["id"] for h in hooks} >= {
        "ruff",
        "ruff-format",
        "mypy",
        "jackfield-validate",
        "jackfield-schema",
    }
    for repo in PRE_COMMIT["repos"]:
        assert repo["repo"] == "local"
    venv_bin = Path(sys.executable).parent
    for hook in hooks:
        assert hook["language"] == "system"
        program = shlex.split(hook["entry"])[0]
        assert (venv_bin / Path(program).name).is_file(), f"{program} is not in the venv"
        assert (REPO / program).parent.resolve() == (REPO / ".venv" / "bin").resolve()
    known = subcommands()
    for hook in hooks:
        for command in jackfield_commands(hook["entry"]):
            assert command[1] in known, hook["id"]


def test_pre_commit_runs_the_config_hooks_on_the_right_files() -> None:
    hooks = {h["id"]: h for repo in PRE_COMMIT["repos"] for h in repo["hooks"]}
    validate = re.compile(hooks["jackfield-validate"]["files"])
    for path in ("agent.yaml", *(p.relative_to(REPO).as_posix() for p in REPO.glob("servers.d/*"))):
        assert validate.search(path), path
    assert not validate.search("deploy/compose.yaml")
    schema = re.compile(hooks["jackfield-schema"]["files"])
    assert schema.search("src/jackfield/spec/models.py")
    assert all(schema.search(p.relative_to(REPO).as_posix()) for p in REPO.glob("schemas/*"))


# --- docs ---------------------------------------------------------------------------------------


def test_the_deploy_docs_list_every_setting() -> None:
    text = (REPO / "docs" / "deploy.md").read_text()
    missing = sorted(n for n in SETTINGS_ENV if f"`{n}`" not in text)
    assert not missing, f"docs/deploy.md's environment table lacks {missing}"
