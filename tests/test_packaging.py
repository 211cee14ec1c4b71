"""Production packaging: supervisord.conf (read by supervisord itself), the Containerfile,
the Kubernetes manifests, the lock file, .env.example and configuration validation.

supervisord is installed from PyPI into a virtualenv of its own, outside the project
(its import name ``supervisor`` is our package's): WA_SUPERVISORD_VENV, default
/tmp/wa-supervisord-venv, created on first use.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import venv
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import psutil
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from harness import TOKEN, clean_env, free_port, pid_alive, wait_for
from packaging.requirements import Requirement

from supervisor.config import ConfigError, load

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
SUPERVISORD_VERSION = "4.2.5"  # Debian bookworm's, which the Containerfile installs


# -- supervisord.conf ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def supervisord_python() -> Path:
    """The interpreter of a virtualenv holding supervisord (never the project's).

    Always run it with ``-I``: from the project's directory, ``import supervisor`` would find ours.
    """
    home = Path(os.environ.get("WA_SUPERVISORD_VENV", "/tmp/wa-supervisord-venv"))
    python = home / "bin" / "python"
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{home}.lock", "w") as lock:
        # Several test runs may share the cache: one builds it, the others wait.
        fcntl.flock(lock, fcntl.LOCK_EX)
        probe = f"from supervisor.options import VERSION; assert VERSION == {SUPERVISORD_VERSION!r}"
        check = [str(python), "-I", "-c", probe]
        if not python.exists() or subprocess.run(check, capture_output=True).returncode != 0:
            venv.EnvBuilder(clear=True, with_pip=True).create(home)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", f"supervisor=={SUPERVISORD_VERSION}"],
                check=True,
                timeout=300,
            )
    return python


PARSE = textwrap.dedent(
    """
    import json, sys
    from supervisor.datatypes import RestartUnconditionally, RestartWhenExitUnexpected
    from supervisor.options import ServerOptions

    opts = ServerOptions()
    opts.realize(args=["-c", sys.argv[1]])
    restart = {RestartUnconditionally: "true", RestartWhenExitUnexpected: "unexpected", False: "false"}
    out = {"nodaemon": opts.nodaemon, "programs": {}}
    for group in opts.process_group_configs:
        for p in group.process_configs:
            out["programs"][p.name] = {
                "command": p.command, "autostart": p.autostart, "autorestart": restart[p.autorestart],
                "exitcodes": list(p.exitcodes), "stopsignal": int(p.stopsignal),
                "stopasgroup": p.stopasgroup, "killasgroup": p.killasgroup, "stopwaitsecs": p.stopwaitsecs,
                "stdout": p.stdout_logfile, "stderr": p.stderr_logfile, "environment": p.environment,
            }
    print(json.dumps(out))
    """
)


def _configmap() -> dict[str, str]:
    doc = yaml.safe_load((K8S / "configmap.yaml").read_text())
    return dict(doc["data"])


def test_supervisord_reads_our_config(supervisord_python: Path) -> None:
    out = subprocess.run(
        [str(supervisord_python), "-I", "-c", PARSE, str(ROOT / "supervisord.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    parsed = json.loads(out.stdout)
    assert parsed["nodaemon"] is True  # the container's foreground process
    program = parsed["programs"]["wa-worker"]
    # The worker from the virtualenv the Containerfile installs the wheel into.
    assert shlex.split(program["command"]) == ["/opt/wa-worker/bin/wa-worker", "serve"]
    assert "python -m venv /opt/wa-worker" in (ROOT / "Containerfile").read_text()
    assert program["autostart"] is True
    assert program["autorestart"] == "unexpected" and program["exitcodes"] == [0]
    assert program["stopsignal"] == signal.SIGTERM
    # SIGTERM to the worker alone (it drains its sessions itself); SIGKILL to the whole group.
    assert program["stopasgroup"] is False and program["killasgroup"] is True
    drain = float(_configmap()["DRAIN_TIMEOUT"])
    assert program["stopwaitsecs"] > drain >= load({}).drain_timeout
    assert (program["stdout"], program["stderr"]) == ("/dev/stdout", "/dev/stderr")
    assert not program["environment"]  # nothing added: the container's environment passes through


def _local_supervisord_conf(tmp: Path, worker: Path) -> Path:
    """supervisord.conf with the paths of this machine instead of the image's."""
    text = (ROOT / "supervisord.conf").read_text()
    swaps = {
        r"^command=\S+": f"command={worker}",
        r"^directory=.*$": f"directory={tmp}",
        r"^pidfile=.*$": f"pidfile={tmp / 'supervisord.pid'}",
        r"^file=.*$": f"file={tmp / 'supervisor.sock'}",
        r"^serverurl=.*$": f"serverurl=unix://{tmp / 'supervisor.sock'}",
    }
    for pattern, replacement in swaps.items():
        text, n = re.subn(pattern, replacement, text, flags=re.M)
        assert n == 1, pattern
    conf = tmp / "supervisord.conf"
    conf.write_text(text)
    return conf


async def test_supervisord_stops_the_worker_through_its_drain(tmp_path: Path, supervisord_python: Path) -> None:
    port, sim_port = free_port(), free_port()
    worker = Path(sys.executable).parent / "wa-worker"
    conf = _local_supervisord_conf(tmp_path, worker)
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_DIR": str(tmp_path / "data"),
        "WA_ENGINE": "sim",
        "SIM_PORT": str(sim_port),
        "WORKER_AUTH_TOKEN": TOKEN,
        "WORKER_ID": "supervised",
        "LOG_FORMAT": "json",
    }
    out = open(tmp_path / "supervisord.out", "wb")
    supervisord = subprocess.Popen(
        [str(supervisord_python), "-I", "-m", "supervisor.supervisord", "-c", str(conf)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    out.close()
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(headers={"X-Worker-Token": TOKEN}) as http:

            async def healthy() -> bool:
                try:
                    async with http.get(f"{url}/health") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout=30, what="worker under supervisord")
            async with http.post(f"{url}/session/create", json={"sessionId": "sup"}) as resp:
                assert resp.status == 200

            async def session_pid() -> int | None:
                async with http.get(f"{url}/sessions") as resp:
                    sessions = (await resp.json())["data"]["sessions"]
                return sessions[0]["pid"] if sessions and sessions[0]["pid"] else None

            await wait_for(session_pid, what="session process")
        everything = [p.pid for p in psutil.Process(supervisord.pid).children(recursive=True)]
        assert len(everything) >= 3  # the worker, its hub and the session process
        supervisord.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(supervisord.wait, 60)
    finally:
        if supervisord.poll() is None:
            supervisord.kill()
            supervisord.wait()
    log = (tmp_path / "supervisord.out").read_text(errors="replace")
    assert code == 0, log
    assert "stopped: wa-worker (exit status 0)" in log, log
    assert '"msg": "drained"' in log, log  # the worker's own log reached supervisord's stdout
    assert not [p for p in everything if pid_alive(p)], "no process outlives supervisord"


# -- Containerfile --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def containerfile() -> DockerfileParser:
    # A file object, not a path: DockerfileParser takes a path for a directory holding "Dockerfile".
    return DockerfileParser(fileobj=io.BytesIO((ROOT / "Containerfile").read_bytes()))


def _final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    froms = [i for i, ins in enumerate(parser.structure) if ins["instruction"] == "FROM"]
    return list(parser.structure[froms[-1] :])


def _one(stage: list[dict[str, Any]], instruction: str) -> str:
    found = [ins["value"] for ins in stage if ins["instruction"] == instruction]
    assert len(found) == 1, (instruction, found)
    return str(found[0])


def test_containerfile_builds_a_non_root_image_with_health_and_volumes(containerfile: DockerfileParser) -> None:
    assert re.fullmatch(r"(docker\.io/library/)?python:3\.11-slim(-\w+)?", containerfile.baseimage)
    stage = _final_stage(containerfile)
    user = _one(stage, "USER")
    uid = int(user.split(":")[0])
    assert uid != 0
    assert _one(stage, "EXPOSE") == "8001"
    health = _one(stage, "HEALTHCHECK")
    assert health.split("CMD", 1)[1].strip() == '["wa-worker", "health"]'
    envs = containerfile.envs
    volumes = json.loads(_one(stage, "VOLUME"))
    assert envs["STORAGE_DIR"] in volumes and envs["LOG_FILE_PATH"] in volumes
    cmd = json.loads(_one(stage, "CMD"))
    assert cmd[0] == "supervisord"
    # The conf supervisord is started with is the one the image copies in.
    copies = [ins["value"].split() for ins in stage if ins["instruction"] == "COPY"]
    assert ["supervisord.conf", cmd[cmd.index("-c") + 1]] in copies
    # supervisord from Debian, pinned; the worker from a wheel under the lock file; nothing from pip's supervisor.
    runs = " ".join(ins["value"] for ins in stage if ins["instruction"] == "RUN")
    assert re.search(r"apt-get install .*supervisor=4\.2\.5", runs)
    # ffmpeg for voice notes the neonize engine converts to Opus (make run installs it: scripts/system-deps).
    assert re.search(r"apt-get install .*ffmpeg=", runs)
    assert "missing+=(ffmpeg)" in (ROOT / "scripts" / "system-deps").read_text()
    assert "--constraint /tmp/requirements.lock /tmp/wheels/*.whl" in runs
    assert "pip install supervisor" not in runs
    # The Kubernetes pod runs as the image's user.
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_containerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    out = subprocess.run([str(hadolint), str(ROOT / "Containerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_build_context_holds_what_the_containerfile_copies(containerfile: DockerfileParser) -> None:
    ignore = (ROOT / ".containerignore").read_text().splitlines()
    assert "*" in ignore  # everything out, then only what the build needs back in
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for ins in containerfile.structure:
        if ins["instruction"] != "COPY" or "--from" in ins["value"]:
            continue
        *sources, _dest = ins["value"].split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"{source} is copied but left out by .containerignore"
            assert (ROOT / source).exists(), source


def test_lock_file_pins_every_runtime_dependency() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned"
            pins[_norm(name)] = version
    assert "supervisor" not in pins, "supervisord must never be in the worker's environment"
    # Every distribution the worker needs at run time, its dependencies' dependencies too.
    todo = [Requirement(r) for r in _project_dependencies()]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        assert name in pins, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} does not fit {req}"
        todo.extend(Requirement(r) for r in metadata.requires(req.name) or [])


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project_dependencies() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


# -- Kubernetes ------------------------------------------------------------------------------
def _k8s_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def test_manifests_are_valid_kubernetes_objects() -> None:
    docs = list(_k8s_docs())
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Deployment", "Service", "PersistentVolumeClaim", "Secret", "ConfigMap", "StatefulSet"} <= kinds
    for _path, doc in docs:
        if doc["kind"] == "Kustomization":
            for resource in doc["resources"]:
                assert (K8S / resource).exists(), resource
            continue
        kubernetes_validate.validate(doc, "1.30", strict=True)  # raises naming the path and field


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_deployment_drains_and_probes_like_the_worker_expects() -> None:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert container["command"] == ["wa-worker", "serve"]
    env = {e["name"]: e for e in container["env"]}
    assert env["WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert port == 8001
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["resources"]["requests"]["memory"] and container["resources"]["requests"]["cpu"]
    # Secrets come from the Secret, settings from the ConfigMap; both exist as manifests.
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert sources["secretRef"] == secret["metadata"]["name"]
    assert set(secret["stringData"]) >= {"WORKER_AUTH_TOKEN", "JWT_SECRET", "ENCRYPTION_KEY", "MINIO_SECRET_KEY"}
    assert not set(secret["stringData"]) & set(_configmap()), "a setting is either secret or not"
    assert sources["configMapRef"] == "wa-worker-config"
    # The data volume is the PVC.
    pvc = yaml.safe_load((K8S / "pvc.yaml").read_text())
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert claims[mounts[env["STORAGE_DIR"]["value"]]] == pvc["metadata"]["name"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one pod per ReadWriteOnce volume
    # The grace period covers the preStop pause and the whole drain.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(_configmap()["DRAIN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain
    # Everything the worker reads from the ConfigMap parses.
    load({**_configmap(), "MINIO_ACCESS_KEY": "k" * 20, "MINIO_SECRET_KEY": "s" * 40, "ENCRYPTION_KEY": "e" * 32})
    service = yaml.safe_load((K8S / "service.yaml").read_text())
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_statefulset_runs_the_same_pod_as_the_deployment() -> None:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    statefulset = next(d for p, d in _k8s_docs() if d["kind"] == "StatefulSet")
    assert _container(statefulset) == _container(deployment)
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]


# -- configuration ----------------------------------------------------------------------------
class _Recorder(dict[str, str]):
    """An environment that remembers which variables were looked up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def _env_example() -> tuple[dict[str, str], set[str]]:
    values: dict[str, str] = {}
    mentioned: set[str] = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]+)=(.*)$", line)
        if m:
            mentioned.add(m.group(2))
            if not m.group(1):
                values[m.group(2)] = m.group(3)
    return values, mentioned


def test_env_example_lists_every_variable_and_loads(tmp_path: Path) -> None:
    values, mentioned = _env_example()
    recorder = _Recorder(
        MINIO_ENDPOINT="minio",
        MINIO_ACCESS_KEY="a" * 20,
        MINIO_SECRET_KEY="b" * 40,
        ENCRYPTION_KEY="k" * 32,
        LOG_FILE_PATH=str(tmp_path),
    )
    load(recorder)
    missing = sorted(recorder.read - mentioned)
    assert not missing, f"add {missing} to .env.example"
    settings = load(values)
    assert settings.drain_timeout == float(values["DRAIN_TIMEOUT"])


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MAX_SESSIONS": "many"}, "MAX_SESSIONS='many' is not an integer"),
        ({"MAX_SESSIONS": "0"}, "MAX_SESSIONS=0 must be at least 1"),
        ({"PORT": "70000"}, "PORT=70000 is not a TCP port"),
        ({"MINIO_PORT": "70000"}, "MINIO_PORT=70000 is not a TCP port"),
        ({"DRAIN_TIMEOUT": "soon"}, "DRAIN_TIMEOUT='soon' is not a number"),
        ({"DRAIN_TIMEOUT": "0"}, "DRAIN_TIMEOUT=0.0 must be at least 1.0"),
        ({"HEARTBEAT_INTERVAL": "30s"}, "HEARTBEAT_INTERVAL='30s' is not an integer"),
        ({"HEARTBEAT_INTERVAL": "5"}, "HEARTBEAT_INTERVAL=5 must be at least"),
        ({"WA_ENGINE": "baileys"}, "WA_ENGINE='baileys' must be one of"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' must be json, text or auto"),
        ({"BACKEND_URL": "backend:3000"}, "BACKEND_URL='backend:3000' must be an http:// or https:// URL"),
        ({"BACKEND_URL": "ftp://backend"}, "BACKEND_URL='ftp://backend' must be an http:// or https:// URL"),
        ({"MINIO_USE_SSL": "maybe"}, "MINIO_USE_SSL='maybe' must be true or false"),
        ({"MINIO_ENDPOINT": "http://minio:9000"}, "MINIO_ENDPOINT='http://minio:9000' must be a host name only"),
        ({"MINIO_ENDPOINT": "minio", "MINIO_SECRET_KEY": "s" * 40}, "MINIO_ACCESS_KEY is required"),
        ({"MINIO_ENDPOINT": "minio", "MINIO_ACCESS_KEY": "a" * 20}, "MINIO_SECRET_KEY is required"),
        ({"MINIO_PUBLIC_URL": "media.example.com"}, "MINIO_PUBLIC_URL='media.example.com' must be an http://"),
        ({"MINIO_PUBLIC_URL": "https://example.com/s3"}, "MINIO_PUBLIC_URL='https://example.com/s3' must be a scheme"),
        ({"ENCRYPTION_KEY": "hunter2hunter2"}, "ENCRYPTION_KEY is too short: use at least 32 characters"),
        # Fail closed: an empty key in a Secret is a mistake, and MinIO backups hold WhatsApp keys.
        ({"ENCRYPTION_KEY": ""}, "ENCRYPTION_KEY is set but empty"),
        ({"ENCRYPTION_KEY": "  "}, "ENCRYPTION_KEY is set but empty"),
        (
            {"MINIO_ENDPOINT": "minio", "MINIO_ACCESS_KEY": "a" * 20, "MINIO_SECRET_KEY": "s" * 40},
            "ENCRYPTION_KEY is required when MINIO_ENDPOINT is set",
        ),
        ({"DATABASE_URL": "mysql://db"}, "DATABASE_URL='mysql://db': only sqlite:/// URLs"),
    ],
)
def test_each_kind_of_bad_value_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env)
    assert str(info.value).startswith(message)
    if env.get("ENCRYPTION_KEY", "").strip():
        assert env["ENCRYPTION_KEY"] not in str(info.value)  # a secret never reaches the log


def test_log_file_path_must_be_a_directory(tmp_path: Path) -> None:
    a_file = tmp_path / "logs"
    a_file.write_text("")
    with pytest.raises(ConfigError, match=r"LOG_FILE_PATH=.* must be a directory"):
        load({"LOG_FILE_PATH": str(a_file)})


def test_good_values_are_typed() -> None:
    s = load(
        {
            "BACKEND_URL": "https://backend.example:3000/",
            "HEARTBEAT_INTERVAL": "15000",
            "MINIO_ENDPOINT": "minio",
            "MINIO_PORT": "9001",
            "MINIO_ACCESS_KEY": "a" * 20,
            "MINIO_SECRET_KEY": "s" * 40,
            "MINIO_USE_SSL": "yes",
            "MINIO_PUBLIC_URL": "https://media.example.com:8443/",
            "ENCRYPTION_KEY": "k" * 64,
            "DRAIN_TIMEOUT": "12.5",
        }
    )
    assert s.backend_heartbeat_interval == 15.0 and s.drain_timeout == 12.5
    assert (s.minio_endpoint, s.minio_port, s.minio_use_ssl) == ("minio", 9001, True)
    assert s.minio_public_url == "https://media.example.com:8443"
    assert "s" * 40 not in repr(s) and "k" * 64 not in repr(s)
    minio = {"MINIO_ENDPOINT": "minio", "MINIO_ACCESS_KEY": "a" * 20, "MINIO_SECRET_KEY": "s" * 40}
    plain = load({**minio, "ALLOW_UNENCRYPTED_BACKUPS": "true"})  # said out loud, for development
    assert plain.minio_endpoint == "minio" and plain.encryption_key is None


@pytest.mark.parametrize(
    "env, line",
    [
        ({"DRAIN_TIMEOUT": "-1"}, "wa-worker: bad configuration: DRAIN_TIMEOUT=-1.0 must be at least 1.0"),
        (
            {"ENCRYPTION_KEY": "secret-but-short"},
            "wa-worker: bad configuration: ENCRYPTION_KEY is too short: use at least 32 characters",
        ),
        ({"LOG_FILE_PATH": "/proc/version/logs"}, "wa-worker: bad configuration: LOG_FILE_PATH=/proc/version/logs: "),
    ],
)
def test_worker_refuses_a_bad_value_with_one_line(tmp_path: Path, env: dict[str, str], line: str) -> None:
    full = clean_env(STORAGE_DIR=str(tmp_path), WORKER_AUTH_TOKEN=TOKEN, PORT=str(free_port()), **env)
    out = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "serve"], env=full, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), out.stderr


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """A module the code imports but pyproject.toml does not declare works here and breaks in the image."""
    import ast

    closure: set[str] = set()
    todo = [Requirement(r) for r in _project_dependencies()]
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in closure or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        closure.add(name)
        todo.extend(Requirement(r) for r in metadata.requires(req.name) or [])
    providers = metadata.packages_distributions()
    ours = {"supervisor", "session_proc", "transport", "common"}
    undeclared: dict[str, str] = {}
    for package in ours:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in ours or top in sys.stdlib_module_names or top == "__future__":
                        continue
                    dists = {_norm(d) for d in providers.get(top, [])}
                    if not dists & closure:
                        undeclared[top] = str(path.relative_to(ROOT))
    assert not undeclared, f"imported but not in [project.dependencies]: {undeclared}"
