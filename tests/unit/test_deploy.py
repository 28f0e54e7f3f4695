"""deploy/: what can be checked without Docker or a cluster.

The manifests and the compose file parse and agree with each other and with the config they
carry (ports, probes, grace periods, selectors, secrets); the Dockerfile has the properties the
deployment relies on, and its ignore file keeps what it copies; the image's entrypoint script
behaves as documented, run under sh and bash with a fake ``wiregate`` that records its calls.
(Building the wheel from that context needs a package index: tests/e2e/test_deploy_config.py.)
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import check_config, load_config, parse_duration, parse_listen

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
LABELS = {"app.kubernetes.io/name": "wiregate", "app.kubernetes.io/component": "gateway"}
PORTS = {"postgres": 15432, "ssh": 2222, "http": 8080, "admin": 8081}


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _one(path: Path) -> dict[str, Any]:
    docs = _docs(path)
    assert len(docs) == 1, f"{path.name}: expected one document, got {len(docs)}"
    return docs[0]


@pytest.fixture(scope="module")
def toml_text() -> str:
    return (DEPLOY / "wiregate.toml").read_text()


@pytest.fixture(scope="module")
def cfg_raw(toml_text: str) -> dict[str, Any]:
    return tomllib.loads(toml_text)


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return _one(K8S / "deployment.yaml")


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod["containers"]
    return c


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _one(DEPLOY / "compose.yaml")


# ---------------------------------------------------------------- every file parses


def test_every_yaml_file_parses_to_mappings():
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert {f.relative_to(DEPLOY).as_posix() for f in files} >= {
        "compose.yaml", "k8s/configmap.yaml", "k8s/secret.yaml", "k8s/deployment.yaml",
        "k8s/service.yaml", "k8s/pdb.yaml", "k8s/kustomization.yaml"}
    for f in files:
        docs = _docs(f)
        assert docs, f"{f} holds no document"
        assert all(isinstance(d, dict) for d in docs), f"{f}: every document must be a mapping"


@pytest.mark.parametrize("name, api_version, kind", [
    ("configmap.yaml", "v1", "ConfigMap"),
    ("secret.yaml", "v1", "Secret"),
    ("deployment.yaml", "apps/v1", "Deployment"),
    ("service.yaml", "v1", "Service"),
    ("pdb.yaml", "policy/v1", "PodDisruptionBudget"),
    ("kustomization.yaml", "kustomize.config.k8s.io/v1beta1", "Kustomization"),
])
def test_k8s_kinds_and_api_versions(name, api_version, kind):
    doc = _one(K8S / name)
    assert (doc["apiVersion"], doc["kind"]) == (api_version, kind)
    if kind != "Kustomization":
        assert doc["metadata"]["name"]
        # namespace-free: `kubectl apply -n` or the kustomization picks it
        assert "namespace" not in doc["metadata"]


def test_kustomization_lists_every_manifest():
    resources = _one(K8S / "kustomization.yaml")["resources"]
    manifests = {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(resources) == sorted(manifests)


# ---------------------------------------------------------------- the config they carry


def test_configmap_carries_deploy_toml_exactly(toml_text):
    cm = _one(K8S / "configmap.yaml")
    assert cm["data"] == {"wiregate.toml": toml_text}


def test_deploy_toml_loads_and_checks_clean(tmp_path, toml_text, monkeypatch):
    # the ConfigMap's text, as the pod sees it in a file
    path = tmp_path / "wiregate.toml"
    path.write_text(_one(K8S / "configmap.yaml")["data"]["wiregate.toml"])
    monkeypatch.setenv("DEMO_DB_PASSWORD", "x")
    cfg = load_config(path)
    errors, warnings = check_config(path)
    assert errors == [] and warnings == []
    assert cfg.gateway.state_dir == "/var/lib/wiregate"
    assert cfg.identity.dev_tokens is True
    assert cfg.identity.admin_groups == ["wiregate-admins"]
    assert cfg.approvals.url


def test_deploy_toml_settings(cfg_raw):
    gw = cfg_raw["gateway"]
    assert gw["store"].startswith("postgresql://")
    # the password comes from PGPASSWORD, never from the URL
    assert re.fullmatch(r"postgresql://[^:@/]+@[^/]+/\w+", gw["store"]), gw["store"]
    assert {k: parse_listen(v) for k, v in cfg_raw["listen"].items()} == {
        k: ("0.0.0.0", port) for k, port in PORTS.items()}
    (demo,) = cfg_raw["targets"]
    assert (demo["name"], demo["protocol"], demo["password_env"]) == ("demo", "postgres", "DEMO_DB_PASSWORD")
    actions = {r["action"]: r for r in cfg_raw["rules"]}
    assert set(actions) == {"deny", "review", "mask"}
    assert actions["review"]["approvers"] == ["dba"]
    assert parse_duration(actions["review"]["timeout"]) == 300


def test_config_names_no_inline_secret(toml_text):
    assert "password =" not in toml_text and "PGPASSWORD=" not in toml_text


# ---------------------------------------------------------------- Kubernetes


def test_deployment_runs_several_replicas(deployment):
    assert deployment["spec"]["replicas"] >= 2


def test_probes_hit_healthz_on_the_admin_port(container, cfg_raw):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == PORTS
    assert ports["admin"] == parse_listen(cfg_raw["listen"]["admin"])[1]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        port = get["port"]
        assert (ports[port] if isinstance(port, str) else port) == ports["admin"], probe


def test_pod_runs_as_non_root_with_a_read_only_root(pod, container, cfg_raw):
    psc, csc = pod["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    # the state dir must be writable: an emptyDir mounted exactly there
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    state = mounts[cfg_raw["gateway"]["state_dir"]]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[state["name"]]
    assert not state.get("readOnly", False)


def test_termination_grace_covers_prestop_and_shutdown_grace(pod, container):
    cm_toml = tomllib.loads(_one(K8S / "configmap.yaml")["data"]["wiregate.toml"])
    grace = parse_duration(cm_toml["gateway"]["shutdown_grace"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > grace + int(pre_stop[1])


def test_config_mount_is_where_wiregate_config_points(pod, container):
    env = {e["name"]: e for e in container["env"]}
    config_path = Path(env["WIREGATE_CONFIG"]["value"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if "configMap" in volumes[m["name"]]]
    assert mount["readOnly"] is True
    cm_volume = volumes[mount["name"]]["configMap"]
    assert cm_volume["name"] == _one(K8S / "configmap.yaml")["metadata"]["name"]
    (item,) = cm_volume["items"]
    assert Path(mount["mountPath"]) / item["path"] == config_path
    assert item["key"] in _one(K8S / "configmap.yaml")["data"]


def test_secrets_reach_the_container_env(container, cfg_raw):
    secret = _one(K8S / "secret.yaml")
    env = {e["name"]: e for e in container["env"]}
    needed = {"PGPASSWORD"} | {t["password_env"] for t in cfg_raw["targets"] if "password_env" in t}
    for name in needed:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]


def test_secret_holds_only_marked_placeholders():
    data = _one(K8S / "secret.yaml")["stringData"]
    assert set(data) == {"PGPASSWORD", "DEMO_DB_PASSWORD"}
    assert all(v == "CHANGE-ME" for v in data.values())


def test_wait_for_store_matches_the_store_url(container, cfg_raw):
    env = {e["name"]: e.get("value") for e in container["env"]}
    host = cfg_raw["gateway"]["store"].split("@", 1)[1].split("/", 1)[0]
    assert env["WIREGATE_WAIT_FOR_STORE"] == f"{host}:5432"
    # the startup probe outlasts the entrypoint's bounded wait
    probe = container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] > int(env["WIREGATE_WAIT_SECONDS"])


def test_selectors_agree(deployment):
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == LABELS
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    service = _one(K8S / "service.yaml")
    assert service["spec"]["selector"] == selector
    pdb = _one(K8S / "pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_service_ports_reach_named_container_ports(container):
    service = _one(K8S / "service.yaml")
    names = {p["name"] for p in container["ports"]}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == PORTS
    assert all(p["targetPort"] in names for p in service["spec"]["ports"])


def test_pdb_keeps_a_majority_available(deployment):
    spec = _one(K8S / "pdb.yaml")["spec"]
    replicas = deployment["spec"]["replicas"]
    if "maxUnavailable" in spec:
        assert 1 <= spec["maxUnavailable"] < replicas - 1
    else:
        assert 2 <= spec["minAvailable"] < replicas


# ---------------------------------------------------------------- compose


def _gateway_services(compose: dict[str, Any]) -> list[str]:
    return [n for n, s in compose["services"].items() if s.get("build")]


def test_compose_services(compose):
    services = compose["services"]
    assert {"store", "demo-db", "gateway"} <= set(services)
    assert _gateway_services(compose) == ["gateway", "gateway-2"]
    assert services["store"]["image"] == services["demo-db"]["image"] == "postgres:15"


def test_compose_databases_have_healthchecks_and_volumes(compose):
    for name in ("store", "demo-db"):
        svc = compose["services"][name]
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL" and test[1].startswith("pg_isready"), name
        assert any(v.endswith(":/var/lib/postgresql/data") for v in svc["volumes"]), name
    seed = [v for v in compose["services"]["demo-db"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    (mount,) = seed
    assert (DEPLOY / mount.split(":")[0]).resolve() == DEPLOY / "demo-seed.sql"
    assert "CREATE TABLE customers" in (DEPLOY / "demo-seed.sql").read_text()


def test_compose_store_credentials_match_the_store_url(compose, cfg_raw):
    env = compose["services"]["store"]["environment"]
    user_host_db = cfg_raw["gateway"]["store"].removeprefix("postgresql://")
    user, rest = user_host_db.split("@")
    host, db = rest.split("/")
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"], host) == (user, db, "store")
    demo = cfg_raw["targets"][0]
    demo_env = compose["services"]["demo-db"]["environment"]
    assert (demo_env["POSTGRES_USER"], demo_env["POSTGRES_DB"]) == (demo["user"], demo["database"])
    assert demo["address"] == "demo-db:5432"
    # the gateway's passwords are the very values the databases are created with
    gw_env = compose["services"]["gateway"]["environment"]
    assert gw_env["PGPASSWORD"] == env["POSTGRES_PASSWORD"]
    assert gw_env["DEMO_DB_PASSWORD"] == demo_env["POSTGRES_PASSWORD"]


@pytest.mark.parametrize("name", ["gateway", "gateway-2"])
def test_compose_gateway(compose, cfg_raw, name):
    svc = compose["services"][name]
    assert (ROOT / svc["build"]["dockerfile"]) == DEPLOY / "Dockerfile"
    assert (DEPLOY / svc["build"]["context"]).resolve() == ROOT
    assert svc["depends_on"] == {"store": {"condition": "service_healthy"},
                                 "demo-db": {"condition": "service_healthy"}}
    assert {"PGPASSWORD", "DEMO_DB_PASSWORD"} <= set(svc["environment"])
    config_path = svc["environment"]["WIREGATE_CONFIG"]
    (cfg_mount,) = [v for v in svc["volumes"] if v.split(":")[1] == config_path]
    src, _, mode = cfg_mount.split(":")
    assert (DEPLOY / src).resolve() == DEPLOY / "wiregate.toml" and mode == "ro"
    assert any(v.split(":")[1] == cfg_raw["gateway"]["state_dir"] for v in svc["volumes"])
    grace = parse_duration(cfg_raw["gateway"]["shutdown_grace"])
    assert parse_duration(svc["stop_grace_period"]) > grace
    container_ports = {int(p.split(":")[1]) for p in svc["ports"]}
    assert container_ports == set(PORTS.values())


def test_compose_gateways_do_not_share_host_ports_or_state(compose):
    a, b = (compose["services"][n] for n in _gateway_services(compose))
    host = lambda svc: {p.split(":")[0] for p in svc["ports"]}  # noqa: E731
    assert not host(a) & host(b)
    state = lambda svc: {v.split(":")[0] for v in svc["volumes"] if v.endswith(":/var/lib/wiregate")}  # noqa: E731
    assert state(a) and not state(a) & state(b)
    assert set(compose["volumes"]) >= state(a) | state(b)


# ---------------------------------------------------------------- Dockerfile


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(DEPLOY / "Dockerfile")


def _last(instrs: list[tuple[str, str]], word: str) -> str:
    found = [rest for w, rest in instrs if w == word]
    assert found, f"no {word} in the Dockerfile"
    return found[-1]


def test_dockerfile_is_multi_stage_on_python_311_slim(dockerfile):
    froms = [rest for w, rest in dockerfile if w == "FROM"]
    assert len(froms) >= 2
    assert all(f.split()[0] == "python:3.11-slim" for f in froms)
    assert any(w == "COPY" and rest.startswith("--from=") for w, rest in dockerfile)
    runs = " ".join(rest for w, rest in dockerfile if w == "RUN")
    assert "pip wheel" in runs and "python -m venv" in runs


def test_dockerfile_runs_as_a_numeric_non_root_user(dockerfile):
    user = _last(dockerfile, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) == 10001
    runs = " ".join(rest for w, rest in dockerfile if w == "RUN")
    assert "--uid 10001" in runs and "chown 10001:10001 /var/lib/wiregate" in runs
    # USER comes after everything that needs root
    words = [w for w, _ in dockerfile]
    last_user = len(words) - 1 - words[::-1].index("USER")
    assert "RUN" not in words[last_user:]


def test_dockerfile_exposes_the_listen_ports(dockerfile):
    exposed = {int(p) for _, rest in dockerfile if _ == "EXPOSE" for p in rest.split()}
    assert exposed == set(PORTS.values())


def test_dockerfile_entrypoint_and_cmd(dockerfile):
    entry = json.loads(_last(dockerfile, "ENTRYPOINT"))
    assert json.loads(_last(dockerfile, "CMD")) == ["serve"]
    copies = [rest.split() for w, rest in dockerfile if w == "COPY" and not rest.startswith("--from")]
    (copy,) = [c for c in copies if c[0] == "deploy/entrypoint.sh"]
    assert entry == [copy[1]]
    env = " ".join(rest for w, rest in dockerfile if w == "ENV")
    assert "WIREGATE_CONFIG=/etc/wiregate/wiregate.toml" in env


def test_dockerfile_healthcheck_calls_healthz(dockerfile):
    hc = _last(dockerfile, "HEALTHCHECK")
    options, _, cmd = hc.partition(" CMD ")
    argv = json.loads(cmd)
    assert "http://127.0.0.1:8081/healthz" in argv[-1]
    assert "urllib" in argv[-1]
    assert "--timeout=" in options


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        code = self.server.status if self.path == "/healthz" else 404  # type: ignore[attr-defined]
        body = b'{"status": "ok"}' if code == 200 else b'{"status": "draining"}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_dockerfile_healthcheck_command_exit_codes(dockerfile, health_server):
    argv = json.loads(_last(dockerfile, "HEALTHCHECK").partition(" CMD ")[2])
    port = health_server.server_address[1]
    # the image's python, here: the venv's
    run = lambda: subprocess.run([sys.executable, *argv[1:-1], argv[-1].replace(":8081/", f":{port}/")],  # noqa: E731
                                 capture_output=True, timeout=20)
    assert run().returncode == 0
    health_server.status = 503  # type: ignore[attr-defined]
    assert run().returncode == 1
    health_server.shutdown()
    health_server.server_close()
    assert run().returncode == 1


def _dockerignore_keeps(path: str, patterns: list[str]) -> bool:
    """Whether the context keeps ``path``: the last pattern matching it or a parent decides."""
    parts = path.split("/")
    keep = True
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        pat = pat.replace("**/", "")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pat.startswith("*") or "/" not in pat:
            candidates += parts  # basename-style patterns (**/x) at any depth
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            keep = negate
    return keep


def test_build_context_holds_what_the_dockerfile_copies(dockerfile):
    ignore = [ln.strip() for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.lstrip().startswith("#")]
    sources = [src for w, rest in dockerfile if w == "COPY" and not rest.startswith("--from")
               for src in rest.split()[:-1]]
    assert "deploy/entrypoint.sh" in sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert _dockerignore_keeps(src, ignore), f"{src} is excluded from the build context"
        if (ROOT / src).is_dir():
            assert _dockerignore_keeps(f"{src}/__init__.py", ignore)
            assert not _dockerignore_keeps(f"{src}/__pycache__/x.pyc", ignore)
    for secret_ish in (".venv/bin/python", ".git/config", ".wiregate/keys/dev_token_ed25519.pem",
                       "tests/conftest.py", "deploy/k8s/secret.yaml"):
        assert not _dockerignore_keeps(secret_ish, ignore), secret_ish


# ---------------------------------------------------------------- entrypoint.sh

FAKE_WIREGATE = r"""#!/bin/sh
# records every call: one line "CALL <pid> <WIREGATE_CONFIG>", then one line per argument
{ printf 'CALL %s %s\n' "$$" "${WIREGATE_CONFIG:-}"; printf '%s\n' "$@"; } >> "$FAKE_LOG"
if [ "$1" = "check" ]; then
    if [ -n "${FAKE_REAL_CHECK:-}" ]; then exec "$FAKE_REAL_CHECK" "$@"; fi
    if [ -n "${FAKE_CHECK_OUTPUT:-}" ]; then printf '%s\n' "$FAKE_CHECK_OUTPUT" >&2; fi
    exit "${FAKE_CHECK_RC:-0}"
fi
exit "${FAKE_RC:-0}"
"""

# `id -u` as the test wants it (FAKE_UID), or the real one
FAKE_ID = r"""#!/bin/sh
if [ -n "${FAKE_UID:-}" ] && [ "${1:-}" = "-u" ]; then echo "$FAKE_UID"; exit 0; fi
exec /usr/bin/id "$@"
"""

SHELLS = ["sh", "bash"]


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, pid: int, log: Path, elapsed: float) -> None:
        self.rc = proc.returncode
        self.stderr = proc.stderr
        self.pid = pid
        self.elapsed = elapsed
        self.calls: list[tuple[int, str, list[str]]] = []
        if log.exists():
            for line in log.read_text().splitlines():
                if line.startswith("CALL "):
                    _, pid_s, *config = line.split(" ", 2)
                    self.calls.append((int(pid_s), config[0] if config else "", []))
                else:
                    self.calls[-1][2].append(line)

    def argvs(self) -> list[list[str]]:
        return [argv for _, _, argv in self.calls]


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    for name, text in (("wiregate", FAKE_WIREGATE), ("id", FAKE_ID)):
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    return d


def run_entrypoint(fake_bin: Path, shell: str, *args: str, env: dict[str, str] | None = None,
                   uid: str | None = "10001", timeout: float = 20) -> Run:
    log = fake_bin.parent / "calls.log"
    log.unlink(missing_ok=True)
    # the fakes first; then python3 (the wait for the store) and the usual tools
    path = os.pathsep.join([str(fake_bin), str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    full_env = {"PATH": path, "FAKE_LOG": str(log), "HOME": str(fake_bin.parent)}
    if uid is not None:
        full_env["FAKE_UID"] = uid
    full_env.update(env or {})
    start = time.monotonic()
    proc = subprocess.Popen([shell, str(ENTRYPOINT), *args], env=full_env, cwd=fake_bin.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, _out, err)
    return Run(done, proc.pid, log, time.monotonic() - start)


def test_entrypoint_is_posix_sh_with_set_eu():
    text = ENTRYPOINT.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert re.search(r"^set -eu$", text, re.M)
    assert os.access(ENTRYPOINT, os.X_OK)
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)]).returncode == 0


@pytest.mark.parametrize("shell", SHELLS)
def test_refuses_root(fake_bin, shell):
    r = run_entrypoint(fake_bin, shell, uid="0")
    assert r.rc == 1
    assert "refusing to run as root" in r.stderr and "WIREGATE_ALLOW_ROOT=1" in r.stderr
    assert r.calls == []


@pytest.mark.parametrize("shell", SHELLS)
def test_root_allowed_when_asked(fake_bin, shell):
    r = run_entrypoint(fake_bin, shell, uid="0", env={"WIREGATE_ALLOW_ROOT": "1"})
    assert r.rc == 0, r.stderr
    assert r.argvs()[-1][0] == "serve"


@pytest.mark.parametrize("value", ["0", "yes", "true", ""])
def test_only_allow_root_1_overrides(fake_bin, value):
    r = run_entrypoint(fake_bin, "sh", uid="0", env={"WIREGATE_ALLOW_ROOT": value})
    assert r.rc == 1 and r.calls == []


def test_the_real_uid_decides(fake_bin):
    # no FAKE_UID: the real `id -u` (the test suite usually runs as root here)
    r = run_entrypoint(fake_bin, "sh", uid=None)
    if os.geteuid() == 0:
        assert r.rc == 1 and "refusing to run as root" in r.stderr and r.calls == []
    else:
        assert r.rc == 0 and r.argvs()[-1][0] == "serve"


@pytest.mark.parametrize("shell", SHELLS)
def test_valid_config_execs_serve_with_the_args(fake_bin, shell):
    r = run_entrypoint(fake_bin, shell, "serve", "--extra", "two words",
                       env={"WIREGATE_CONFIG": "/cfg/w.toml"})
    assert r.rc == 0, r.stderr
    assert r.argvs() == [["check", "-c", "/cfg/w.toml"], ["serve", "-c", "/cfg/w.toml", "--extra", "two words"]]
    # exec: wiregate serve is the entrypoint's own process (it gets SIGTERM directly)
    serve_pid, serve_config, _ = r.calls[-1]
    check_pid = r.calls[0][0]
    assert serve_pid == r.pid and check_pid != r.pid
    assert serve_config == "/cfg/w.toml"


@pytest.mark.parametrize("shell", SHELLS)
def test_no_args_serves_the_default_config(fake_bin, shell):
    r = run_entrypoint(fake_bin, shell)
    assert r.rc == 0, r.stderr
    default = "/etc/wiregate/wiregate.toml"
    assert r.argvs() == [["check", "-c", default], ["serve", "-c", default]]


def test_serve_exit_status_is_the_entrypoints(fake_bin):
    r = run_entrypoint(fake_bin, "sh", env={"FAKE_RC": "3"})
    assert r.rc == 3


@pytest.mark.parametrize("args, config", [
    (["serve", "-c", "/other.toml", "--x"], "/other.toml"),
    (["serve", "--config", "/other.toml"], "/other.toml"),
    (["serve", "--config=/other.toml"], "/other.toml"),
    (["serve", "-c/other.toml"], "/other.toml"),
    (["-c", "/other.toml"], "/other.toml"),
])
def test_an_explicit_config_is_the_one_checked(fake_bin, args, config):
    r = run_entrypoint(fake_bin, "sh", *args, env={"WIREGATE_CONFIG": "/env.toml"})
    assert r.rc == 0, r.stderr
    expected_serve = ["serve", *args[1:]] if args[0] == "serve" else ["serve", *args]
    assert r.argvs() == [["check", "-c", config], expected_serve]


@pytest.mark.parametrize("shell", SHELLS)
def test_invalid_config_stops_with_the_checks_output(fake_bin, shell):
    r = run_entrypoint(fake_bin, shell, env={"FAKE_CHECK_RC": "1",
                                            "FAKE_CHECK_OUTPUT": "error: listen.admin: expected a string"})
    assert r.rc == 1
    assert "error: listen.admin: expected a string" in r.stderr
    assert "not valid" in r.stderr
    assert r.argvs() == [["check", "-c", "/etc/wiregate/wiregate.toml"]]


def test_check_warnings_are_shown_and_serving_goes_on(fake_bin):
    r = run_entrypoint(fake_bin, "sh", env={"FAKE_CHECK_OUTPUT": "warning: DEMO_DB_PASSWORD is not set"})
    assert r.rc == 0 and "warning: DEMO_DB_PASSWORD is not set" in r.stderr
    assert r.argvs()[-1][0] == "serve"


def test_with_the_real_check_on_the_deploy_config(fake_bin, tmp_path):
    real = shutil.which("wiregate", path=str(Path(sys.executable).parent))
    assert real, "the venv's wiregate script"
    ok = run_entrypoint(fake_bin, "sh", env={"FAKE_REAL_CHECK": real,
                                            "WIREGATE_CONFIG": str(DEPLOY / "wiregate.toml")})
    assert ok.rc == 0, ok.stderr
    assert "wiregate.toml: ok" in ok.stderr
    assert ok.argvs()[-1] == ["serve", "-c", str(DEPLOY / "wiregate.toml")]
    broken = tmp_path / "broken.toml"
    broken.write_text((DEPLOY / "wiregate.toml").read_text().replace('shutdown_grace = "30s"',
                                                                     'shutdown_grace = "soon"'))
    bad = run_entrypoint(fake_bin, "sh", env={"FAKE_REAL_CHECK": real, "WIREGATE_CONFIG": str(broken)})
    assert bad.rc == 1
    assert "gateway.shutdown_grace" in bad.stderr
    assert [a[0] for a in bad.argvs()] == ["check"]


@pytest.mark.parametrize("args", [["approvals", "list"], ["token", "issue", "--sub", "alice"], ["--help"]])
def test_other_subcommands_pass_straight_through(fake_bin, args):
    r = run_entrypoint(fake_bin, "sh", *args, env={"WIREGATE_CONFIG": "/cfg/w.toml"})
    assert r.rc == 0, r.stderr
    if args[0].startswith("-"):
        # an option first is an option of serve (docker run IMAGE --help)
        assert r.argvs() == [["check", "-c", "/cfg/w.toml"], ["serve", "-c", "/cfg/w.toml", *args]]
        return
    assert r.argvs() == [args]
    pid, config, _ = r.calls[0]
    assert pid == r.pid and config == "/cfg/w.toml"


def test_pass_through_is_still_refused_as_root(fake_bin):
    r = run_entrypoint(fake_bin, "sh", "approvals", "list", uid="0")
    assert r.rc == 1 and r.calls == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("shell", SHELLS)
def test_wait_for_store_times_out_on_a_closed_port(fake_bin, shell):
    port = _closed_port()
    r = run_entrypoint(fake_bin, shell, env={"WIREGATE_WAIT_FOR_STORE": f"127.0.0.1:{port}",
                                            "WIREGATE_WAIT_SECONDS": "1"})
    assert r.rc != 0
    assert f"the store at 127.0.0.1:{port} did not accept a connection within 1 s" in r.stderr
    assert r.elapsed < 6
    # checked first, never served
    assert r.argvs() == [["check", "-c", "/etc/wiregate/wiregate.toml"]]


@pytest.mark.parametrize("shell", SHELLS)
def test_wait_for_store_proceeds_once_it_listens(fake_bin, shell):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        r = run_entrypoint(fake_bin, shell, env={"WIREGATE_WAIT_FOR_STORE": f"127.0.0.1:{port}",
                                                "WIREGATE_WAIT_SECONDS": "5"})
    assert r.rc == 0, r.stderr
    assert "accepts connections" in r.stderr
    assert r.argvs()[-1] == ["serve", "-c", "/etc/wiregate/wiregate.toml"]
    assert r.elapsed < 5


def test_wait_for_store_waits_for_a_late_store(fake_bin):
    port = _closed_port()
    listener = socket.socket()

    def open_later() -> None:
        time.sleep(1.0)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(8)

    t = threading.Thread(target=open_later)
    t.start()
    try:
        r = run_entrypoint(fake_bin, "sh", env={"WIREGATE_WAIT_FOR_STORE": f"127.0.0.1:{port}",
                                                "WIREGATE_WAIT_SECONDS": "10"})
    finally:
        t.join()
        listener.close()
    assert r.rc == 0, r.stderr
    assert 0.9 < r.elapsed < 10
    assert r.argvs()[-1][0] == "serve"


@pytest.mark.parametrize("target", ["store", "store:", ":5432", "store:port", "store:70000"])
def test_wait_for_store_rejects_a_malformed_address(fake_bin, target):
    r = run_entrypoint(fake_bin, "sh", env={"WIREGATE_WAIT_FOR_STORE": target, "WIREGATE_WAIT_SECONDS": "1"})
    assert r.rc != 0
    assert "WIREGATE_WAIT_FOR_STORE must be host:port" in r.stderr
    assert [a[0] for a in r.argvs()] == ["check"]


@pytest.mark.parametrize("seconds", ["abc", "-1", "1.5", " 5"])
def test_wait_seconds_must_be_whole_seconds(fake_bin, seconds):
    r = run_entrypoint(fake_bin, "sh", env={"WIREGATE_WAIT_FOR_STORE": "127.0.0.1:1",
                                            "WIREGATE_WAIT_SECONDS": seconds})
    assert r.rc == 2
    assert "WIREGATE_WAIT_SECONDS must be a whole number of seconds" in r.stderr
    assert [a[0] for a in r.argvs()] == ["check"]


def test_wait_for_store_handles_ipv6_brackets(fake_bin):
    with socket.socket(socket.AF_INET6) as listener:
        try:
            listener.bind(("::1", 0))
        except OSError as e:  # no IPv6 loopback in this sandbox: the IPv4 tests cover the rest
            pytest.fail(f"IPv6 loopback unavailable: {e}")
        listener.listen(8)
        port = listener.getsockname()[1]
        r = run_entrypoint(fake_bin, "sh", env={"WIREGATE_WAIT_FOR_STORE": f"[::1]:{port}",
                                                "WIREGATE_WAIT_SECONDS": "3"})
    assert r.rc == 0, r.stderr


def test_readme_commands_name_real_files():
    """Commands in deploy/README.md name files that exist (a rename would leave them stale)."""
    readme = (DEPLOY / "README.md").read_text()
    named = 0
    for line in readme.splitlines():
        line = line.strip()
        if not line.startswith(("docker ", "kubectl ")):
            continue
        words = shlex.split(line)
        for flag in ("-f", "-k"):
            if flag in words:
                target = words[words.index(flag) + 1]
                assert (ROOT / target).exists(), f"{line}: {target} does not exist"
                named += 1
    assert named >= 5
