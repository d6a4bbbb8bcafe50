"""examples/istio: the manifests against Istio's published types, and their pluginConfig
against the real filter in the real Envoy.

1. Schema and types: scripts/istio-validate.sh (npm @kubernetes-models/istio 3.0.1, i.e.
   Istio 1.29.2's CRD schemas, plus its TypeScript interfaces for unknown fields; installed
   into .tools/istio-validate on first use). Needs node and npm.
2. The pluginConfig goes through the filter's own parser: an Envoy bootstrap shaped like
   what Istio generates from the WasmPlugin (name <ns>.<name>, root_id = pluginName, no
   vm_id, configuration = pluginConfig as JSON) is checked with `envoy --mode validate`
   (which runs on_configure).
3. The same filter config serves real requests in Envoy, with its JWKS callout going to a
   cluster named `outbound|443||issuer.example.com` that originates TLS with SNI
   issuer.example.com, as destinationrule.yaml asks Istio to build it.
"""
from __future__ import annotations

import copy
import http.server
import json
import shutil
import ssl
import subprocess
import threading
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from harness.bootstrap_walk import walk
from harness.envoy import REPO
from harness.issuer import Issuer

ISTIO = REPO / "examples" / "istio"
VALIDATE = REPO / "scripts" / "istio-validate.sh"
ENVOY_CONFIG = REPO / "envoy" / "edge-jwt.yaml"
MANIFESTS = sorted(ISTIO.glob("*.yaml"))
ISSUER_HOST = "issuer.example.com"
ISTIO_CLUSTER = f"outbound|443||{ISSUER_HOST}"
JWKS_URI = f"https://{ISSUER_HOST}/.well-known/jwks.json"
VERDICT_HEADER = "x-jwt-verified"


# -- helpers ---------------------------------------------------------------------------

def load(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((ISTIO / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: expected one document, got {len(docs)}"
    return docs[0]


def plugin_config() -> dict:
    return load("wasmplugin.yaml")["spec"]["pluginConfig"]


def istio_json(cfg: dict) -> str:
    """pluginConfig as Istio hands it to Envoy: a protobuf Struct rendered by jsonpb.

    Struct numbers are doubles; jsonpb (encoding/json rules) writes whole numbers below
    1e21 without a fraction, so plain ints are what the filter receives.
    """
    def check(v, at="pluginConfig"):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return
        if isinstance(v, (int, float)):
            assert float(v).is_integer() and abs(v) < 1e21, f"{at}: {v!r} would not stay an integer"
            return
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, x in items:
            check(x, f"{at}.{k}")
    check(cfg)
    return json.dumps(cfg, sort_keys=True)  # jsonpb sorts Struct keys


def run_validator(*files: str | Path, timeout: float = 600) -> tuple[int, dict | str]:
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.fail("node and npm are needed to validate the Istio manifests "
                    "(apt-get install nodejs npm)", pytrace=False)
    p = subprocess.run(["bash", str(VALIDATE), "--json", *map(str, files)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       timeout=timeout, cwd=REPO)
    out = p.stdout.decode(errors="replace")
    if p.returncode == 2:
        pytest.fail(f"istio-validate could not run:\n{p.stderr.decode(errors='replace')}\n{out}",
                    pytrace=False)
    try:
        return p.returncode, json.loads(out)
    except json.JSONDecodeError:
        return p.returncode, out + p.stderr.decode(errors="replace")


def envoy_filter_json() -> dict:
    """The filter config of the standalone Envoy bootstrap (envoy/edge-jwt.yaml)."""
    boot = yaml.safe_load(ENVOY_CONFIG.read_text())
    for d in walk(boot):
        if d.get("@type", "").endswith("filters.http.wasm.v3.Wasm"):
            return json.loads(d["config"]["configuration"]["value"])
    raise AssertionError(f"no wasm filter in {ENVOY_CONFIG}")




def without_http_uri(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    for p in cfg["providers"].values():
        p.get("remote_jwks", {}).pop("http_uri", None)
    return cfg


def callout_clusters(cfg: dict) -> set[str]:
    out = set()
    for p in cfg["providers"].values():
        rj = p.get("remote_jwks") or {}
        for u in [rj.get("http_uri")] + list(rj.get("failover_http_uris") or []):
            if u:
                out.add(u["cluster"])
    if cfg.get("revocation"):
        out.add(cfg["revocation"]["http_uri"]["cluster"])
    return out


def istio_cluster(name: str, address: str, port: int, ca_pem: str | None = None) -> dict:
    """The Envoy cluster Istio builds for serviceentry.yaml + destinationrule.yaml
    (DNS resolution, TLS SIMPLE with SNI), pointed at `address:port`."""
    dr_tls = load("destinationrule.yaml")["spec"]["trafficPolicy"]["tls"]
    tls: dict = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                 "sni": dr_tls["sni"]}
    if ca_pem:
        tls["common_tls_context"] = {"validation_context": {
            "trusted_ca": {"inline_string": ca_pem},
            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": dr_tls["sni"]}}]}}
    return {
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_ONLY",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}]}]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
    }


def istio_shaped(envoy_factory, cfg_json: str, *, clusters: list[dict], start: bool = False, **kw):
    """An Envoy whose wasm filter is configured the way Istio configures it."""
    wp = load("wasmplugin.yaml")
    meta, spec = wp["metadata"], wp["spec"]

    def hook(boot: dict) -> None:
        boot["static_resources"]["clusters"].extend(clusters)
        for d in walk(boot):
            vm = d.get("vm_config")
            if isinstance(vm, dict):
                assert not vm.get("vm_id"), "Istio never sets vm_id"
                vm["environment_variables"] = {"key_values": {
                    "ISTIO_META_WASM_IMAGE_PULL_POLICY": spec["imagePullPolicy"],
                    "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": "1"}}

    return envoy_factory(cfg_json, start=start, plugin_name=f"{meta['namespace']}.{meta['name']}",
                         root_id=spec["pluginName"], vm_id="", bootstrap_hook=hook, **kw)


# -- 1. Istio's schemas and types --------------------------------------------------------

def test_manifests_valid_against_istio_types():
    assert {m.name for m in MANIFESTS} >= {"wasmplugin.yaml", "serviceentry.yaml",
                                          "destinationrule.yaml", "authorizationpolicy.yaml"}
    rc, report = run_validator(*MANIFESTS)
    assert isinstance(report, dict), report
    bad = [r for r in report["results"] if not r["ok"]]
    assert rc == 0 and not bad, json.dumps(bad, indent=2)
    kinds = sorted(r["kind"] for r in report["results"])
    assert kinds == ["AuthorizationPolicy", "DestinationRule", "ServiceEntry", "WasmPlugin"], kinds
    assert report["istio_models"] == "3.0.1"


MISTAKES = {
    # file, mutation, a substring the validator must report
    "unknown_top_field": ("wasmplugin.yaml", lambda d: d["spec"].__setitem__("phse", d["spec"].pop("phase")),
                          'unknown field "phse"'),
    "bad_enum": ("wasmplugin.yaml", lambda d: d["spec"].__setitem__("failStrategy", "FAIL_CLOSED"),
                 "/spec/failStrategy"),
    "bad_type": ("wasmplugin.yaml", lambda d: d["spec"].__setitem__("priority", "high"), "/spec/priority"),
    "missing_url": ("wasmplugin.yaml", lambda d: d["spec"].pop("url"), "required property url"),
    "selector_and_targetrefs": ("wasmplugin.yaml", lambda d: d["spec"].__setitem__(
        "targetRefs", [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]),
        "only one of targetRefs or selector"),
    "nested_unknown_field": ("authorizationpolicy.yaml", lambda d: d["spec"]["rules"][1]["when"][0].__setitem__(
        "valuez", d["spec"]["rules"][1]["when"][0].pop("values")), 'unknown field "valuez"'),
    "bad_tls_mode": ("destinationrule.yaml", lambda d: d["spec"]["trafficPolicy"]["tls"].__setitem__(
        "mode", "TLS"), "/spec/trafficPolicy/tls/mode"),
    "bad_location": ("serviceentry.yaml", lambda d: d["spec"].__setitem__("location", "EXTERNAL"),
                     "/spec/location"),
}


def test_validator_catches_mistakes(tmp_path):
    """The validation is not vacuous: each broken copy fails, for the expected reason."""
    files = {}
    for name, (src, mutate, _) in MISTAKES.items():
        doc = load(src)
        mutate(doc)
        f = tmp_path / f"{name}.yaml"
        f.write_text(yaml.safe_dump(doc, sort_keys=False))
        files[str(f)] = name
    rc, report = run_validator(*files)
    assert rc == 1 and isinstance(report, dict), report
    by_name = {files[r["source"].rsplit("#", 1)[0]]: r for r in report["results"]}
    for name, (_, _, needle) in MISTAKES.items():
        r = by_name[name]
        assert not r["ok"], f"{name}: the validator accepted it"
        assert any(needle in p for p in r["problems"]), f"{name}: {r['problems']}"


# -- 2. how the manifests fit together ---------------------------------------------------

def test_wasmplugin_fields():
    wp = load("wasmplugin.yaml")
    spec = wp["spec"]
    assert spec["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert "targetRefs" not in spec and "targetRef" not in spec
    assert spec["url"] == "oci://ghcr.io/edge-jwt/edge-jwt:0.1.0"
    assert spec["phase"] == "AUTHN"
    assert isinstance(spec["priority"], int)
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["imagePullPolicy"] in ("IfNotPresent", "Always")
    assert spec["pluginName"] == "edge-jwt"
    http_uri = spec["pluginConfig"]["providers"]["demo"]["remote_jwks"]["http_uri"]
    assert http_uri["cluster"] == ISTIO_CLUSTER
    assert http_uri["uri"] == JWKS_URI


def test_serviceentry_and_destinationrule_build_the_callout_cluster():
    se, dr = load("serviceentry.yaml")["spec"], load("destinationrule.yaml")["spec"]
    assert se["location"] == "MESH_EXTERNAL" and se["resolution"] == "DNS"
    assert se["hosts"] == [ISSUER_HOST]
    # Istio names a ServiceEntry's clusters outbound|<port>|<subset>|<host>.
    names = {f"outbound|{p['number']}||{h}" for p in se["ports"] for h in se["hosts"]}
    assert callout_clusters(plugin_config()) <= names, (callout_clusters(plugin_config()), names)
    (port,) = [p for p in se["ports"] if p["number"] == 443]
    assert port["protocol"] in ("HTTPS", "TLS")
    assert dr["host"] == ISSUER_HOST
    assert dr["trafficPolicy"]["tls"]["mode"] == "SIMPLE"
    assert dr["trafficPolicy"]["tls"]["sni"] == ISSUER_HOST
    wp_ns = load("wasmplugin.yaml")["metadata"]["namespace"]
    for name in ("serviceentry.yaml", "destinationrule.yaml", "authorizationpolicy.yaml"):
        assert load(name)["metadata"]["namespace"] == wp_ns, f"{name} must live beside the gateway"


def test_authorizationpolicy_requires_the_verdict_header():
    ap = load("authorizationpolicy.yaml")["spec"]
    assert ap["action"] == "ALLOW"
    assert ap["selector"] == load("wasmplugin.yaml")["spec"]["selector"]
    public_rules = [r for r in ap["rules"] if "when" not in r]
    guarded = [r for r in ap["rules"] if "when" in r]
    assert len(guarded) == 1 and guarded[0]["when"] == [
        {"key": f"request.headers[{VERDICT_HEADER}]", "values": ["true"]}]
    # The public paths of the policy are exactly the plugin's bypass rules (no `requires`).
    def istio_paths(match: dict) -> list[str]:
        if "path_separated_prefix" in match:
            p = match["path_separated_prefix"]
            return [p, p + "/*"]
        return [match["prefix"] + "*"]

    bypass = sorted(p for r in plugin_config()["rules"] if "requires" not in r for p in istio_paths(r["match"]))
    allowed = sorted(p for r in public_rules for t in r["to"] for p in t["operation"]["paths"])
    guarded_not = sorted(p for t in guarded[0]["to"] for p in t["operation"]["notPaths"])
    assert allowed == bypass == guarded_not, (allowed, bypass, guarded_not)


def test_pluginconfig_is_the_envoy_config():
    """Same JSON as envoy/edge-jwt.yaml except where the JWKS callout goes."""
    assert without_http_uri(plugin_config()) == without_http_uri(envoy_filter_json())


# -- 3. the filter's own parser, in Envoy ----------------------------------------------

def test_pluginconfig_passes_envoy_validate(envoy_factory):
    cfg = plugin_config()
    env = istio_shaped(envoy_factory, istio_json(cfg),
                       clusters=[istio_cluster(ISTIO_CLUSTER, ISSUER_HOST, 443)])
    boot = env.bootstrap()
    defined = {c["name"] for c in boot["static_resources"]["clusters"]}
    assert callout_clusters(cfg) <= defined
    rc, out = env.validate_config()
    assert rc == 0, out[-3000:]
    assert 'plugin "istio-system.edge-jwt" configured' in out, out[-3000:]
    assert "refused" not in out


def test_broken_pluginconfig_fails_envoy_validate(envoy_factory):
    cfg = plugin_config()
    cfg["providers"]["demo"]["audience"] = cfg["providers"]["demo"].pop("audiences")
    env = istio_shaped(envoy_factory, istio_json(cfg),
                       clusters=[istio_cluster(ISTIO_CLUSTER, ISSUER_HOST, 443)])
    rc, out = env.validate_config()
    assert rc == 1, out[-3000:]
    assert "edge-jwt: config" in out and "refused: at providers.demo.audience:" in out, out[-3000:]


def test_validate_mode_does_not_check_callout_clusters(envoy_factory):
    """Observed with Envoy 1.40: validate mode passes a wasm filter whose callout cluster
    is missing (the name is only looked up at dispatch time), which is why the test above
    checks the bootstrap's cluster names itself."""
    env = istio_shaped(envoy_factory, istio_json(plugin_config()), clusters=[])
    rc, out = env.validate_config()
    assert rc == 0, out[-3000:]


# -- 4. real requests: Istio-named cluster, TLS origination as the DestinationRule says ------

def _self_signed(host: str, workdir: Path) -> tuple[Path, Path, str]:
    """(cert file, key file, CA PEM): a CA and a server cert for `host`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-jwt test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    cert_file, key_file = workdir / "server.crt", workdir / "server.key"
    cert_file.write_bytes(cert.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, ca.public_bytes(pem).decode()


class TlsJwks:
    """HTTPS front for the issuer's JWKS, standing in for https://issuer.example.com.
    Records the SNI and Host of every request."""

    def __init__(self, issuer: Issuer, workdir: Path) -> None:
        cert, key, self.ca_pem = _self_signed(ISSUER_HOST, workdir)
        self.sni: list[str | None] = []
        self.hosts: list[str | None] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.sni_callback = lambda sock, name, _ctx: self.sni.append(name)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                owner.hosts.append(self.headers.get("Host"))
                with urllib.request.urlopen(issuer.url + self.path, timeout=5) as r:
                    body, status, ctype = r.read(), r.status, r.headers.get("Content-Type")
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def demo_issuer(issuer_bin, tmp_path_factory):
    iss_url = plugin_config()["providers"]["demo"]["issuer"]
    iss = Issuer(issuer_bin, workdir=tmp_path_factory.mktemp("istio-issuer"), issuer_url=iss_url)
    iss.start()
    yield iss
    iss.stop()


def test_istio_shaped_filter_serves_requests_over_tls_callout(envoy_factory, demo_issuer, echo, tmp_path):
    front = TlsJwks(demo_issuer, tmp_path)
    try:
        env = istio_shaped(envoy_factory, istio_json(plugin_config()), start=True,
                           clusters=[istio_cluster(ISTIO_CLUSTER, "127.0.0.1", front.port, front.ca_pem)])
        token = demo_issuer.mint(scope="read")

        r = env.wait_status("/istio/ok", token, 200, timeout=15)
        assert r.status == 200, (r, env.log_tail())
        seen = echo.find("/istio/ok")[-1]["headers"]
        assert seen.get(VERDICT_HEADER) == "true", seen

        # The callout went through the Istio-named cluster, over TLS with the DR's SNI,
        # and asked for the JWKS URI's host and path.
        assert front.sni and set(front.sni) == {ISSUER_HOST}, front.sni
        assert set(front.hosts) == {ISSUER_HOST}, front.hosts

        r = env.get("/istio/none")
        assert r.status == 401 and (r.header("www-authenticate") or "").lower().startswith("bearer"), r
        assert not echo.find("/istio/none")

        # A client-sent verdict header never survives (authorizationpolicy.yaml relies on it).
        r = env.request("GET", "/istio/forged", [(VERDICT_HEADER, "true")])
        assert r.status == 401, r
        r = env.request("GET", "/public/istio-forged", [(VERDICT_HEADER, "true")])
        assert r.status == 200, r
        assert echo.find("/public/istio-forged")[-1]["headers"].get(VERDICT_HEADER) != "true"

        # /admin needs scope admin (rule with required_scopes).
        assert env.get("/admin/istio", token).status == 403
        assert env.get("/admin/istio", demo_issuer.mint(scope="read admin")).status == 200
    finally:
        front.stop()
