#!/usr/bin/env python3
"""edge-jwt benchmark: edge-jwt next to Envoy's native jwt_authn, same Envoy binary.

Run through scripts/bench.sh (it finds the tools); `--help` lists the options.

Setups (one Envoy each, same listener pattern, same `direct_response` 200 upstream,
same HTTP connection manager without access log):
  passthrough        no auth filter
  jwt_authn_nocache  envoy.filters.http.jwt_authn, local_jwks inline, no jwt_cache_config
  jwt_authn_cache    the same with jwt_cache_config.jwt_cache_size (default 10000)
  edge-jwt_nocache   the wasm filter, local_jwks inline, its verified-token cache off
                     (jwt_cache_config.jwt_cache_size 0)
  edge-jwt           the wasm filter with the same jwt_cache_size as jwt_authn_cache
                     (a build without jwt_cache_config: its own default; edge-jwt_nocache
                     is then skipped)
All auth setups: the same JWKS, issuer, audience, Authorization Bearer, forward the
token, require `exp`, 60 s clock skew; /public bypasses, everything else needs a JWT.

Workloads (wrk, a Lua script cycling through a token file; every request sends a token):
  repeated  one valid token
  distinct  N distinct valid tokens (default 50,000: more than the jwt_authn cache
            holds, so cycling through them never hits an LRU cache)
  mixed     another pool of N valid tokens with every 10th replaced by a copy whose signature
            has one bit flipped in S (still S < L, so the full verification runs and fails)

Each at Envoy --concurrency 1 and 2, setups interleaved in a rotating order per round;
figures are the median over rounds. Per run it also records Envoy's CPU time per request,
the cache hit share (jwt_cache_hit/miss counters) and the CPU other processes used.

Extras (skip with --no-extras): Envoy VmRSS once ready and after load; time from spawning
Envoy to the first 200 for a valid token (local_jwks, and remote_jwks served by
`edge-jwt-issuer serve`); p99 at half of edge-jwt's saturation, open loop (h2load --rps).

--ed25519: the filter built with ed25519-dalek and with ed25519-compact (same checkout,
same toolchain), one Envoy each (--concurrency 1), wrk -c1 -t1 on distinct tokens; the
cost per token is the latency of a JWT-required path minus that of a bypass path.
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness.envoy import Envoy, EnvoyStartError, http_request, jwt_authn_filter  # noqa: E402
from harness.ports import LOOPBACK, free_port  # noqa: E402

ISSUER_URL = "https://issuer.bench.local"
AUDIENCE = "api.demo.local"
SETUPS = ["passthrough", "jwt_authn_nocache", "jwt_authn_cache", "edge-jwt_nocache", "edge-jwt"]
AUTH_SETUPS = SETUPS[1:]
WORKLOADS = ["repeated", "distinct", "mixed"]
RULES = [
    {"match": {"prefix": "/public"}},
    {"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}},
]
BYPASS_PATH = "/public/bench"
BUSY_WARN = 0.25  # cores used by other processes during a run before the report flags it
LIBS = {"ed25519-dalek": "dalek", "ed25519-compact": "compact"}

WRK_LUA = r"""
-- Cycles through a token file: one pre-built request per token.
-- wrk ... -s rotate.lua URL -- PATH TOKEN_FILE [OFFSET THREADS]
-- Thread t starts at OFFSET + t * (#tokens / THREADS): the caller passes where the
-- previous run on the same Envoy stopped, so that across runs the tokens are one cycle.
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local reqs = {}
local idx = 0
function init(args)
  local path = args[1] or "/"
  for line in io.lines(args[2]) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("GET", path, {["Authorization"] = "Bearer " .. line})
    end
  end
  if #reqs == 0 then error("no tokens in " .. args[2]) end
  local offset = tonumber(args[3]) or 0
  local threads = tonumber(args[4]) or 1
  idx = (offset + (tid or 0) * math.floor(#reqs / threads)) % #reqs
end
function request()
  idx = idx + 1
  if idx > #reqs then idx = 1 end
  return reqs[idx]
end
function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"lat_mean_us":%.3f,' ..
    '"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rotate(items: list, k: int) -> list:
    if not items:
        return []
    k %= len(items)
    return items[k:] + items[:k]


def seconds(text: str) -> int:
    """'10s', '10', '2m' -> whole seconds (wrk and h2load take whole seconds here)."""
    t = str(text).strip().lower()
    mult = 1
    if t.endswith("m"):
        mult, t = 60, t[:-1]
    elif t.endswith("s"):
        t = t[:-1]
    try:
        v = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 10s)") from None
    if v < 0 or v != int(v):
        raise argparse.ArgumentTypeError(f"duration must be whole, non-negative seconds: {text!r}")
    return int(v)


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def tamper(token: str) -> str:
    """Flip the lowest bit of S (signature byte 32): the encoding stays canonical and
    S stays below L, so a verifier has to do the whole check to refuse it."""
    h, p, s = token.split(".")
    sig = bytearray(b64url_decode(s))
    if len(sig) != 64:
        raise BenchError(f"unexpected signature length {len(sig)}")
    sig[32] ^= 0x01
    out = f"{h}.{p}.{b64url(bytes(sig))}"
    assert out != token
    return out


def read_mem(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in KiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def system_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_cpu_s(pid: int | None) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    if not pid:
        return 0.0
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """CPU used during a run by Envoy, by the load generator (waited-for children) and by
    everything else on the machine (other processes competing for the CPUs)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.t = time.monotonic()
        self.busy = system_busy_s()
        self.envoy = process_cpu_s(pid)
        self.children = children_cpu_s()

    def stop(self) -> dict:
        wall = time.monotonic() - self.t
        busy = system_busy_s() - self.busy
        envoy = process_cpu_s(self.pid) - self.envoy
        loadgen = children_cpu_s() - self.children
        other = max(0.0, busy - envoy - loadgen)
        return {"wall_s": wall, "envoy_cpu_s": envoy, "loadgen_cpu_s": loadgen,
                "other_cores": other / wall if wall > 0 else None}


def wait_idle(max_wait: float, threshold: float = 0.15, window: float = 0.5) -> dict:
    """Wait (at most max_wait s) until the machine's busy CPU over `window` is below
    `threshold` cores. Our Envoys are idle between runs, so what is left is others' load."""
    t0 = time.monotonic()
    busy = None
    while True:
        b0, w0 = system_busy_s(), time.monotonic()
        time.sleep(window)
        busy = (system_busy_s() - b0) / (time.monotonic() - w0)
        if busy < threshold or time.monotonic() - t0 >= max_wait:
            return {"waited_s": round(time.monotonic() - t0, 2), "busy_cores": round(busy, 2)}


def strip_access_log(boot: dict) -> None:
    for ls in boot["static_resources"]["listeners"]:
        for fc in ls["filter_chains"]:
            for f in fc["filters"]:
                f["typed_config"].pop("access_log", None)


def fmt_num(v, digits=0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def fmt_ms(us) -> str:
    return "–" if us is None else f"{us / 1000:.2f}"


def fmt_ratio(a, b) -> str:
    if a is None or not b:
        return "–"
    return f"{a / b:.2f}×"


def fmt_pct(share) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def fmt_mib(kib) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def percentile(sorted_xs: list, q: float):
    if not sorted_xs:
        return None
    i = max(0, min(len(sorted_xs) - 1, math.ceil(q * len(sorted_xs)) - 1))
    return sorted_xs[i]


# --------------------------------------------------------------------------- bench


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.envoy_bin = self._tool("ENVOY_BIN", ROOT / ".tools" / "bin" / "envoy", "Envoy 1.40 binary",
                                    "scripts/setup.sh envoy")
        self.issuer_bin = self._tool("EDGE_JWT_ISSUER", ROOT / "target" / "release" / "edge-jwt-issuer",
                                     "edge-jwt-issuer", "scripts/build.sh")
        self.wasm = self._tool("EDGE_JWT_WASM", ROOT / "target" / "edge_jwt.wasm", "edge-jwt wasm",
                               "scripts/build.sh") if args.run_matrix or args.run_extras else None
        self.wrk_bin = shutil.which(os.environ.get("WRK") or "wrk")
        self.h2load_bin = shutil.which(os.environ.get("H2LOAD") or "h2load")
        if not self.wrk_bin:
            raise BenchError("wrk not found (scripts/setup.sh loadgen, or set WRK)")
        if args.run_extras and not self.h2load_bin:
            raise BenchError("h2load not found (scripts/setup.sh loadgen, or set H2LOAD)")
        self.out_root = Path(args.out).resolve()
        self.stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = self.out_root / self.stamp
        n = 1
        while self.run_dir.exists():
            n += 1
            self.run_dir = self.out_root / f"{self.stamp}-{n}"
        self.run_dir.mkdir(parents=True)
        self.work = Path(tempfile.mkdtemp(prefix="edge-jwt-bench-"))
        self.wasm_src = self.wasm
        if self.wasm:
            # A snapshot: the wasm may be rebuilt while the benchmark runs; every Envoy of
            # this run loads the same bytes.
            self.wasm = self.work / "edge_jwt.wasm"
            shutil.copyfile(self.wasm_src, self.wasm)
        self.envoys: list[Envoy] = []
        self._cache_support: dict[str, bool] = {}
        self.offsets: dict[tuple[int, str], int] = {}
        self.results: dict = {"runs": [], "meta": {}, "problems": []}
        self.t0 = time.monotonic()

    @staticmethod
    def _tool(env: str, default: Path, what: str, how: str) -> Path:
        p = Path(os.environ.get(env) or default).resolve()
        if not p.is_file():
            raise BenchError(f"{what} not found at {p} ({how}, or set {env})")
        return p

    # -- keys and tokens -----------------------------------------------------
    def prepare_tokens(self) -> None:
        a = self.args
        self.keydir = self.work / "keys"  # harness Issuer(workdir=work) serves work/keys
        self._issuer(["init", "--dir", str(self.keydir)])
        jwks = json.loads(self._issuer(["jwks", "--dir", str(self.keydir)]))
        self.jwks = json.dumps({"keys": jwks["keys"]}, separators=(",", ":"))
        ttl = 3600 + 3 * self.estimate_seconds()
        n = a.tokens
        t = time.monotonic()
        want = 2 * n + 1  # one for repeated; distinct and mixed get their own pools, so that one
        #                   workload never warms a cache for the next
        tokens = self._issuer(["mint", "--dir", str(self.keydir), "--issuer", ISSUER_URL, "--aud", AUDIENCE,
                               "--ttl", str(ttl), "--count", str(want)], timeout=600).split()
        if len(tokens) != want or len(set(tokens)) != want:
            raise BenchError(f"issuer minted {len(tokens)} tokens ({len(set(tokens))} distinct), wanted {want}")
        log(f"minted {want} tokens in {time.monotonic() - t:.1f}s (ttl {ttl}s)")
        self.token = tokens[0]
        distinct = tokens[1:n + 1]
        every = a.invalid_every
        mixed = [tamper(tok) if i % every == every - 1 else tok for i, tok in enumerate(tokens[n + 1:])]
        self.bad_token = tamper(self.token)
        self.token_files = {}
        for name, toks in (("repeated", [self.token]), ("distinct", distinct), ("mixed", mixed)):
            f = self.work / f"tokens-{name}.txt"
            f.write_text("\n".join(toks) + "\n")
            self.token_files[name] = f
        self.invalid_share = sum(1 for i in range(n) if i % every == every - 1) / n
        self.lua = self.work / "rotate.lua"
        self.lua.write_text(WRK_LUA)

    def _issuer(self, argv: list[str], timeout: float = 60) -> str:
        p = subprocess.run([str(self.issuer_bin), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, text=True, timeout=timeout)
        if p.returncode != 0:
            raise BenchError(f"edge-jwt-issuer {argv[0]} failed ({p.returncode}): {p.stderr[-800:]}")
        return p.stdout

    def estimate_seconds(self) -> int:
        a = self.args
        per = a.duration + a.warmup
        s = 0
        if a.run_matrix:
            s += len(a.concurrency) * len(a.setups) * len(a.workloads) * (a.rounds * a.duration + a.warmup)
        if a.run_extras:
            s += len(a.concurrency) * 3 * a.rounds * (a.duration + 1) + 5 * a.rounds * 5
        if a.run_ed25519:
            s += 600 + 4 * a.rounds * per
        return s

    # -- Envoy setups --------------------------------------------------------
    def provider(self, remote: dict | None = None) -> dict:
        """One provider, in the vocabulary jwt_authn and edge-jwt share (docs/CONFIG.md)."""
        p = {
            "issuer": ISSUER_URL,
            "audiences": [AUDIENCE],
            "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
            "forward": True,
            "require_expiration": True,
            "clock_skew_seconds": 60,
        }
        if remote:
            p["remote_jwks"] = {"http_uri": {"uri": remote["uri"], "cluster": remote["cluster"],
                                             "timeout": "2s"}, "cache_duration": "300s"}
        else:
            p["local_jwks"] = {"inline_string": self.jwks}
        return p

    def jwt_provider(self, cache: bool, remote: dict | None = None) -> dict:
        p = self.provider(remote)
        if cache:  # jwt_authn: per provider
            p["jwt_cache_config"] = {"jwt_cache_size": self.args.jwt_cache_size}
        return p

    def edge_config(self, remote: dict | None = None, cache_size: int | None = None) -> dict:
        out = {"providers": {"demo": self.provider(remote)}, "rules": RULES}
        if cache_size is not None:  # edge-jwt: filter-wide
            out["jwt_cache_config"] = {"jwt_cache_size": cache_size}
        return out

    def edge_cache_supported(self, wasm: Path) -> bool:
        """Whether this build takes `jwt_cache_config` (older builds refuse unknown fields)."""
        key = str(wasm)
        if key not in self._cache_support:
            e = Envoy(self.edge_config(cache_size=0), wasm=wasm, direct_response=(200, "ok"), envoy_bin=self.envoy_bin,
                      workdir=Path(tempfile.mkdtemp(prefix="probe-", dir=self.work)))
            rc, out = e.validate_config()
            self._cache_support[key] = rc == 0
            if rc != 0:
                log(f"{wasm.name}: jwt_cache_config refused by this build; edge-jwt runs with its default cache, "
                    "edge-jwt_nocache is skipped")
        return self._cache_support[key]

    def make_envoy(self, setup: str, concurrency: int, *, wasm: Path | None = None, port: int = 0,
                   remote: dict | None = None, tag: str = "") -> Envoy:
        def hook(boot: dict) -> None:
            strip_access_log(boot)
            if port:
                boot["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port

        workdir = Path(tempfile.mkdtemp(prefix=f"{setup}-c{concurrency}{tag}-", dir=self.work))
        kw = dict(direct_response=(200, "ok"), concurrency=concurrency, log_level=self.args.envoy_log_level,
                  envoy_bin=self.envoy_bin, workdir=workdir, bootstrap_hook=hook, ready_timeout=60,
                  # Envoys started at the same time with hot restart on (--use-dynamic-base-id) were seen
                  # to take each other down; none of ours is ever hot-restarted.
                  extra_args=["--disable-hot-restart"])
        if remote:
            kw["clusters"] = {remote["cluster"]: remote["port"]}
        if setup == "passthrough":
            e = Envoy(use_wasm=False, **kw)
        elif setup in ("jwt_authn_nocache", "jwt_authn_cache"):
            f = jwt_authn_filter({"demo": self.jwt_provider(setup == "jwt_authn_cache", remote)}, RULES)
            e = Envoy(use_wasm=False, filters_before=[f], **kw)
        elif setup in ("edge-jwt", "edge-jwt_nocache"):
            wasm = wasm or self.wasm
            size = None
            if self.edge_cache_supported(wasm):
                size = 0 if setup == "edge-jwt_nocache" else self.args.jwt_cache_size
            elif setup == "edge-jwt_nocache":
                raise BenchError("edge-jwt_nocache needs a build that takes jwt_cache_config")
            e = Envoy(self.edge_config(remote, size), wasm=wasm, **kw)
        else:
            raise ValueError(setup)
        self.envoys.append(e)
        return e

    def start_many(self, envoys: dict[str, Envoy]) -> None:
        """Start several Envoys at once (wasm compilation dominates start-up), then preflight each."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(envoys) or 1) as pool:
            futs = {s: pool.submit(e.start) for s, e in envoys.items()}
            for s, f in futs.items():
                try:
                    f.result()
                except EnvoyStartError as err:
                    raise BenchError(f"{s}: Envoy did not start: {err}") from None
        for s, e in envoys.items():
            self.preflight(e, s)

    def preflight(self, e: Envoy, setup: str) -> None:
        """The setup answers as configured before any number is taken from it."""
        auth = setup != "passthrough"
        checks = [("/", self.token, 200), ("/", self.bad_token, 401 if auth else 200),
                  ("/", None, 401 if auth else 200), (BYPASS_PATH, None, 200)]
        for path, tok, want in checks:
            hs = [("Authorization", f"Bearer {tok}")] if tok else []
            try:
                r = http_request(e.port, "GET", path, hs, timeout=10)
            except OSError as err:
                raise BenchError(f"{setup}: preflight GET {path} on port {e.port}: {err} (Envoy running: "
                                 f"{e.running()})\n{e.log_tail(30)}") from None
            if r.status != want:
                raise BenchError(f"{setup}: preflight GET {path} ({'no token' if tok is None else 'token'}) "
                                 f"answered {r.status}, expected {want}; body {r.body[:200]!r}\n{e.log_tail(30)}")

    def stop_all(self) -> None:
        for e in self.envoys:
            try:
                e.stop()
            except Exception as err:  # noqa: BLE001 - keep stopping the others
                log(f"stopping Envoy pid {getattr(e.proc, 'pid', '?')}: {err}")
        self.envoys.clear()

    # -- load generators -----------------------------------------------------
    def wrk(self, port: int, token_file: Path, *, duration: int, connections: int, threads: int,
            path: str = "/", pid: int | None = None) -> dict:
        """One wrk run. Token files are walked as one cycle per (Envoy, file) across runs: a run
        starts where the previous one stopped, so a cache never sees a token again before the
        whole file has gone by (a restart at the top each run would replay the same tokens)."""
        key = (port, str(token_file))
        offset = self.offsets.get(key, 0)
        cmd = [self.wrk_bin, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
               "--timeout", "5s", "-s", str(self.lua), f"http://{LOOPBACK}:{port}{path}", "--", path,
               str(token_file), str(offset), str(threads)]
        meter = CpuMeter(pid)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           text=True, timeout=duration + 60)
        cpu = meter.stop()
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if p.returncode != 0 or line is None:
            raise BenchError(f"wrk failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-1000:]}\n{p.stderr[-1000:]}")
        d = json.loads(line[len("WRKJSON "):])
        self.offsets[key] = offset + d["requests"] // threads
        secs = d["duration_us"] / 1e6
        d["rps"] = d["requests"] / secs if secs > 0 else 0.0
        d["non2xx"] = d["status_errors"]
        d["errors"] = d["connect_errors"] + d["read_errors"] + d["write_errors"] + d["timeouts"]
        d["non2xx_share"] = d["non2xx"] / d["requests"] if d["requests"] else None
        d.update(cpu)
        d["envoy_cpu_us_per_req"] = 1e6 * cpu["envoy_cpu_s"] / d["requests"] if pid and d["requests"] else None
        return d

    def h2load_rate(self, port: int, total_rps: float, duration: int, warmup: int, pid: int | None = None) -> dict:
        c = self.args.connections
        logf = self.work / f"h2load-{time.monotonic_ns()}.log"
        cmd = [self.h2load_bin, "--h1", "-c", str(c), "-t", "1", "--rps", f"{total_rps / c:.3f}", "-D", str(duration),
               "--warm-up-time", str(warmup), "-H", f"authorization: Bearer {self.token}",
               "--log-file", str(logf), f"http://{LOOPBACK}:{port}/"]
        meter = CpuMeter(pid)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           text=True, timeout=duration + warmup + 60)
        cpu = meter.stop()
        if p.returncode != 0 or not logf.exists():
            raise BenchError(f"h2load failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-1000:]}\n{p.stderr[-800:]}")
        lats, non2xx = [], 0
        for ln in logf.read_text().splitlines():
            parts = ln.split("\t")
            if len(parts) < 3:
                continue
            status, lat = int(parts[1]), int(parts[2])
            lats.append(lat)
            if not 200 <= status < 300:
                non2xx += 1
        logf.unlink(missing_ok=True)
        lats.sort()
        return {"requests": len(lats), "achieved_rps": len(lats) / duration if duration else None,
                "target_rps": total_rps, "non2xx": non2xx, "lat_p50_us": percentile(lats, 0.50),
                "lat_p99_us": percentile(lats, 0.99), "lat_mean_us": statistics.fmean(lats) if lats else None,
                "other_cores": cpu["other_cores"]}

    # -- 1. throughput / latency matrix --------------------------------------
    def run_matrix(self) -> None:
        a = self.args
        total = len(a.concurrency) * a.rounds * len(a.workloads) * len(a.setups)
        done = 0
        self.results["memory"] = []
        for conc in a.concurrency:
            envoys = {}
            try:
                for s in a.setups:
                    envoys[s] = self.make_envoy(s, conc)
                self.start_many(envoys)
                ready_mem = {s: read_mem(e.proc.pid) for s, e in envoys.items()}
                if a.warmup:
                    log(f"concurrency {conc}: warm-up {a.warmup}s per setup and workload")
                    for s in a.setups:
                        for w in a.workloads:
                            self.wrk(envoys[s].port, self.token_files[w], duration=a.warmup,
                                     connections=a.connections, threads=a.wrk_threads)
                for r in range(a.rounds):
                    order = rotate(list(a.setups), r)
                    for w in a.workloads:
                        for s in order:
                            idle = wait_idle(a.idle_wait) if a.idle_wait else {}
                            c0 = self.cache_counters(envoys[s])
                            d = self.wrk(envoys[s].port, self.token_files[w], duration=a.duration,
                                         connections=a.connections, threads=a.wrk_threads, pid=envoys[s].proc.pid)
                            c1 = self.cache_counters(envoys[s])
                            d.update(idle=idle)
                            if c0 and c1 and (c1[0] - c0[0]) + (c1[1] - c0[1]) > 0:
                                d["cache_hit_share"] = (c1[0] - c0[0]) / ((c1[0] - c0[0]) + (c1[1] - c0[1]))
                            d.update(kind="wrk", setup=s, workload=w, concurrency=conc, round=r + 1,
                                     mem=read_mem(envoys[s].proc.pid))
                            self.results["runs"].append(d)
                            done += 1
                            self._check_statuses(d)
                            log(f"[{done}/{total}] c{conc} round {r + 1} {w:<8} {s:<17} "
                                f"{d['rps']:>9.0f} req/s  p50 {d['lat_p50_us'] / 1000:6.2f} ms  "
                                f"p99 {d['lat_p99_us'] / 1000:6.2f} ms  non-2xx {100 * d['non2xx_share']:.1f}%  "
                                f"Envoy {d['envoy_cpu_us_per_req']:.0f} µs CPU/req  other load {d['other_cores']:.2f} cores")
                for s, e in envoys.items():
                    self.results["memory"].append({"setup": s, "concurrency": conc, "ready": ready_mem[s],
                                                   "after_load": read_mem(e.proc.pid)})
            finally:
                for e in envoys.values():
                    e.stop()

    @staticmethod
    def cache_counters(e: Envoy) -> tuple[int, int] | None:
        """(hits, misses) of the verified-token cache: jwt_authn's and edge-jwt's counters
        share the names jwt_cache_hit / jwt_cache_miss. None when there are none."""
        try:
            st = e.stats(r"jwt_cache_(hit|miss)$")
        except (OSError, RuntimeError, ValueError):
            return None
        if not st:
            return None
        hit = sum(v for k, v in st.items() if k.endswith("jwt_cache_hit"))
        miss = sum(v for k, v in st.items() if k.endswith("jwt_cache_miss"))
        return hit, miss

    def _check_statuses(self, d: dict) -> None:
        share = d["non2xx_share"] or 0.0
        expect = self.invalid_share if (d["workload"] == "mixed" and d["setup"] != "passthrough") else 0.0
        if d["errors"]:
            self.problem(f"{d['setup']} {d['workload']} c{d['concurrency']} round {d['round']}: "
                         f"{d['errors']} socket errors/timeouts")
        if abs(share - expect) > 0.02:
            self.problem(f"{d['setup']} {d['workload']} c{d['concurrency']} round {d['round']}: "
                         f"{100 * share:.1f}% non-2xx, expected {100 * expect:.0f}%")

    def problem(self, msg: str) -> None:
        log(f"WARNING: {msg}")
        self.results["problems"].append(msg)

    def summary(self) -> list[dict]:
        rows = []
        runs = [r for r in self.results["runs"] if r.get("kind") == "wrk"]
        for conc in self.args.concurrency:
            for w in self.args.workloads:
                for s in self.args.setups:
                    rs = [r for r in runs if (r["concurrency"], r["workload"], r["setup"]) == (conc, w, s)]
                    if not rs:
                        continue
                    rows.append({
                        "concurrency": conc, "workload": w, "setup": s, "rounds": len(rs),
                        "rps": median([r["rps"] for r in rs]),
                        "rps_min": min(r["rps"] for r in rs), "rps_max": max(r["rps"] for r in rs),
                        "p50_us": median([r["lat_p50_us"] for r in rs]),
                        "p99_us": median([r["lat_p99_us"] for r in rs]),
                        "non2xx_share": median([r["non2xx_share"] for r in rs]),
                        "rss_kib": median([r["mem"].get("VmRSS") for r in rs]),
                        "envoy_cpu_us_per_req": median([r.get("envoy_cpu_us_per_req") for r in rs]),
                        "cache_hit_share": median([r.get("cache_hit_share") for r in rs]),
                        "other_cores": median([r.get("other_cores") for r in rs]),
                        "other_cores_max": max((r.get("other_cores") or 0) for r in rs),
                    })
        by = {(r["concurrency"], r["workload"], r["setup"]): r for r in rows}
        for r in rows:
            for ref in ("passthrough", "jwt_authn_nocache", "jwt_authn_cache"):
                base = by.get((r["concurrency"], r["workload"], ref))
                r[f"vs_{ref}"] = (r["rps"] / base["rps"]) if base and base["rps"] else None
        return rows

    # -- 2. start to first verified request ----------------------------------
    def run_startup(self) -> None:
        from harness.issuer import Issuer  # needs `cryptography`, only for remote_jwks

        a = self.args
        conc = a.startup_concurrency
        issuer = Issuer(self.issuer_bin, workdir=self.work, issuer_url=ISSUER_URL)
        issuer.start()
        try:
            remote = {"uri": issuer.jwks_uri, "cluster": "issuer", "port": issuer.port}
            cases = [("passthrough", None), ("jwt_authn_nocache", None), ("edge-jwt", None),
                     ("jwt_authn_nocache", remote), ("edge-jwt", remote)]
            if a.quick:
                cases = [c for c in cases if not (c[0] == "jwt_authn_nocache" and c[1])]
            cases = [c for c in cases if c[0] in a.setups or c[0] == "passthrough"]
            out = []
            for r in range(a.startup_rounds):
                for setup, rem in rotate(cases, r):
                    label = f"{setup} ({'remote_jwks' if rem else 'local_jwks' if setup != 'passthrough' else 'no auth'})"
                    d = self.first_verified(setup, conc, rem)
                    d.update(label=label, setup=setup, jwks="remote" if rem else "local", round=r + 1,
                             concurrency=conc)
                    out.append(d)
                    log(f"start-up {label} c{conc}: listener {d['listen_ms']:.0f} ms, "
                        f"first 200 {d['first_200_ms']:.0f} ms")
            self.results["startup"] = out
        finally:
            issuer.stop()

    def first_verified(self, setup: str, conc: int, remote: dict | None) -> dict:
        port = free_port()
        e = self.make_envoy(setup, conc, port=port, remote=remote, tag="-start")
        e.write_bootstrap()
        hs = [("Authorization", f"Bearer {self.token}")]
        statuses: dict[int, int] = {}
        listen = first = None
        with open(e.out_path, "wb") as outf:
            t0 = time.monotonic()
            e.proc = subprocess.Popen(e.command(), stdout=outf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = t0 + 60
            while time.monotonic() < deadline:
                if e.proc.poll() is not None:
                    raise BenchError(f"start-up {setup}: Envoy exited {e.proc.returncode}\n{e.log_tail(30)}")
                try:
                    resp = http_request(port, "GET", "/", hs, timeout=10)
                except OSError:
                    time.sleep(0.002)
                    continue
                now = time.monotonic()
                listen = listen or now
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    first = now
                    break
                time.sleep(0.002)
            if first is None:
                raise BenchError(f"start-up {setup}: no 200 within 60 s (statuses {statuses})\n{e.log_tail(30)}")
            return {"listen_ms": (listen - t0) * 1000, "first_200_ms": (first - t0) * 1000,
                    "statuses_before": {k: v for k, v in statuses.items() if k != 200}}
        finally:
            e.stop()

    # -- 3. p99 at half of saturation -----------------------------------------
    def run_half_saturation(self) -> None:
        a = self.args
        summ = {(r["concurrency"], r["workload"], r["setup"]): r for r in self.summary()}
        setups = ["passthrough", "edge-jwt"] if a.quick else ["passthrough", "jwt_authn_cache", "edge-jwt"]
        setups = [s for s in setups if s in a.setups or s == "passthrough"]
        out = []
        for conc in (a.concurrency[:1] if a.quick else a.concurrency):
            envoys = {}
            try:
                for s in setups:
                    envoys[s] = self.make_envoy(s, conc, tag="-half")
                self.start_many(envoys)
                sat = summ.get((conc, "repeated", "edge-jwt"), {}).get("rps")
                if not sat:
                    d = self.wrk(envoys["edge-jwt"].port, self.token_files["repeated"], duration=max(2, a.duration),
                                 connections=a.connections, threads=a.wrk_threads)
                    sat = d["rps"]
                rate = sat / 2
                warm = 1 if a.duration >= 3 else 0
                for r in range(a.rounds):
                    for s in rotate(setups, r):
                        idle = wait_idle(a.idle_wait) if a.idle_wait else {}
                        d = self.h2load_rate(envoys[s].port, rate, a.duration, warm, pid=envoys[s].proc.pid)
                        d.update(idle=idle)
                        d.update(setup=s, concurrency=conc, round=r + 1, saturation_rps=sat)
                        out.append(d)
                        if d["non2xx"]:
                            self.problem(f"h2load {s} c{conc}: {d['non2xx']} non-2xx")
                        log(f"half-saturation c{conc} {s:<17} {d['achieved_rps']:.0f}/{rate:.0f} req/s "
                            f"p50 {d['lat_p50_us'] / 1000:.2f} ms p99 {d['lat_p99_us'] / 1000:.2f} ms")
            finally:
                for e in envoys.values():
                    e.stop()
        self.results["half_saturation"] = out

    # -- 4. Ed25519 libraries inside Envoy -------------------------------------
    def build_variant(self, variant: str) -> Path:
        override = os.environ.get(f"EDGE_JWT_{variant.upper()}_WASM")
        if override:
            p = Path(override).resolve()
            if not p.is_file():
                raise BenchError(f"EDGE_JWT_{variant.upper()}_WASM={override}: no such file")
            log(f"{variant}: using {p}")
            return p
        build = Path(os.environ.get("EDGE_JWT_BENCH_BUILD_DIR") or ROOT / "bench-results" / ".build").resolve()
        target_dir = build / f"cargo-{variant}"
        target = os.environ.get("BENCH_WASM_TARGET") or "wasm32-wasip1"
        toolchain = os.environ.get("BENCH_EDGE_JWT_TOOLCHAIN") or "debian"
        cargo = os.environ.get("BENCH_WASM_CARGO") or "/usr/bin/cargo"
        env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
        cmd = [cargo, "build", "--release", "--target", target]
        if toolchain == "debian":
            for k in ("CARGO_ENCODED_RUSTFLAGS", "RUSTUP_TOOLCHAIN"):
                env.pop(k, None)
            env.update(
                RUSTC=os.environ.get("BENCH_WASM_RUSTC") or "/usr/bin/rustc",
                RUSTC_BOOTSTRAP=os.environ.get("BENCH_WASM_RUSTC_BOOTSTRAP") or "1",
                RUSTFLAGS=os.environ.get("BENCH_WASM_RUSTFLAGS") or "-L /usr/lib/wasm32-wasi -C link-self-contained=no",
            )
            if Path("/usr/bin/rustdoc").exists():
                env["RUSTDOC"] = "/usr/bin/rustdoc"
            cmd.append(os.environ.get("BENCH_WASM_BUILD_STD") or "-Zbuild-std=std,panic_abort")
        cmd += ["-p", "edge-jwt", "--lib"]
        if variant != "dalek":
            cmd += ["--no-default-features", "--features", variant]
        log(f"{variant}: building ({' '.join(cmd)}, CARGO_TARGET_DIR={target_dir})")
        t = time.monotonic()
        logf = build / f"build-{variant}.log"
        build.mkdir(parents=True, exist_ok=True)
        with open(logf, "w") as lf:
            p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=lf, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=3600)
        if p.returncode != 0:
            raise BenchError(f"{variant} build failed ({p.returncode}); log {logf}:\n{logf.read_text()[-2000:]}")
        built = target_dir / target / "release" / "edge_jwt.wasm"
        dest = build / f"edge_jwt-{variant}.wasm"
        shutil.copyfile(built, dest)
        log(f"{variant}: {dest} ({dest.stat().st_size} bytes) in {time.monotonic() - t:.0f}s")
        return dest

    def run_ed25519(self) -> None:
        a = self.args
        wasms = {lib: self.build_variant(v) for lib, v in LIBS.items()}
        self.results["ed25519_wasm"] = {lib: self.wasm_info(p) for lib, p in wasms.items()}
        envoys = {}
        out = []
        paths = ["/", BYPASS_PATH]
        tf = self.token_files["distinct"]
        try:
            for lib, w in wasms.items():
                setup = "edge-jwt_nocache" if self.edge_cache_supported(w) else "edge-jwt"
                envoys[lib] = self.make_envoy(setup, 1, wasm=w, tag=f"-{LIBS[lib]}")
            self.start_many(envoys)
            if a.warmup:
                for lib in wasms:
                    for path in paths:
                        self.wrk(envoys[lib].port, tf, duration=a.warmup, connections=1, threads=1, path=path)
            for r in range(a.rounds):
                for lib in rotate(list(wasms), r):
                    for path in rotate(paths, r):
                        idle = wait_idle(a.idle_wait) if a.idle_wait else {}
                        d = self.wrk(envoys[lib].port, tf, duration=a.duration, connections=1, threads=1, path=path,
                                     pid=envoys[lib].proc.pid)
                        d.update(idle=idle)
                        d.update(kind="ed25519", lib=lib, path=path, round=r + 1)
                        if d["non2xx"] or d["errors"]:
                            self.problem(f"ed25519 {lib} {path}: {d['non2xx']} non-2xx, {d['errors']} errors")
                        out.append(d)
                        log(f"ed25519 round {r + 1} {lib:<16} {path:<14} mean {d['lat_mean_us']:.1f} µs "
                            f"p50 {d['lat_p50_us']} µs ({d['rps']:.0f} req/s, Envoy {d['envoy_cpu_us_per_req']:.1f} "
                            f"µs CPU/req, other load {d['other_cores']:.2f} cores)")
        finally:
            for e in envoys.values():
                e.stop()
        self.results["ed25519"] = out

    def ed25519_summary(self) -> list[dict]:
        """Per library, per round: JWT-required path minus bypass path (p50 latency, mean
        latency, Envoy CPU per request); medians over rounds. The p50 difference is the
        headline: on a shared machine a preempted request moves the mean, rarely the median."""
        rows = []
        runs = self.results.get("ed25519", [])
        for lib in LIBS:
            cols: dict[str, list] = {k: [] for k in ("p50", "mean", "cpu", "v_p50", "b_p50", "v_mean", "b_mean")}
            for r in sorted({x["round"] for x in runs}):
                v = next((x for x in runs if (x["lib"], x["path"], x["round"]) == (lib, "/", r)), None)
                b = next((x for x in runs if (x["lib"], x["path"], x["round"]) == (lib, BYPASS_PATH, r)), None)
                if not (v and b):
                    continue
                cols["p50"].append(v["lat_p50_us"] - b["lat_p50_us"])
                cols["mean"].append(v["lat_mean_us"] - b["lat_mean_us"])
                cols["v_p50"].append(v["lat_p50_us"])
                cols["b_p50"].append(b["lat_p50_us"])
                cols["v_mean"].append(v["lat_mean_us"])
                cols["b_mean"].append(b["lat_mean_us"])
                if v.get("envoy_cpu_us_per_req") is not None and b.get("envoy_cpu_us_per_req") is not None:
                    cols["cpu"].append(v["envoy_cpu_us_per_req"] - b["envoy_cpu_us_per_req"])
            if cols["p50"]:
                rows.append({"lib": lib, "rounds": len(cols["p50"]),
                             "us_per_verify": median(cols["p50"]),
                             "us_per_verify_min": min(cols["p50"]), "us_per_verify_max": max(cols["p50"]),
                             "us_per_verify_mean": median(cols["mean"]),
                             "cpu_us_per_verify": median(cols["cpu"]),
                             "verify_p50_us": median(cols["v_p50"]), "bypass_p50_us": median(cols["b_p50"]),
                             "verify_mean_us": median(cols["v_mean"]), "bypass_mean_us": median(cols["b_mean"]),
                             "other_cores": median([x.get("other_cores") for x in runs if x["lib"] == lib]),
                             "wasm_bytes": self.results["ed25519_wasm"][lib]["bytes"]})
        return rows

    # -- meta, report ----------------------------------------------------------
    @staticmethod
    def wasm_info(p: Path) -> dict:
        b = p.read_bytes()
        return {"path": str(p), "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest(),
                "mtime": dt.datetime.fromtimestamp(p.stat().st_mtime).isoformat(timespec="seconds")}

    def collect_meta(self) -> None:
        a = self.args
        m = self.results["meta"]
        m["timestamp"] = self.stamp
        m["command"] = "scripts/bench.sh " + " ".join(a.argv)
        try:
            v = subprocess.run([str(self.envoy_bin), "--version"], capture_output=True, text=True, timeout=30).stdout
            m["envoy_version"] = v.strip().split("version:")[-1].strip()
        except (OSError, subprocess.SubprocessError):
            m["envoy_version"] = "?"
        m["envoy_bin"] = str(self.envoy_bin)
        if self.wasm:
            m["wasm"] = dict(self.wasm_info(self.wasm), path=str(self.wasm_src),
                             mtime=dt.datetime.fromtimestamp(self.wasm_src.stat().st_mtime).isoformat(timespec="seconds"))
        try:
            head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            m["git"] = head + (" (uncommitted changes)" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            m["git"] = "?"
        cpu = "?"
        try:
            for ln in Path("/proc/cpuinfo").read_text().splitlines():
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        m["cpu"] = f"{cpu}, {os.cpu_count()} CPUs"
        m["kernel"] = platform.release()
        for tool in (self.wrk_bin, self.h2load_bin):
            if tool:
                try:
                    p = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
                    m[Path(tool).name] = (p.stdout + p.stderr).strip().splitlines()[0]
                except (OSError, subprocess.SubprocessError, IndexError):
                    pass
        m["settings"] = {k: getattr(a, k) for k in ("duration", "rounds", "warmup", "connections", "wrk_threads",
                                                     "concurrency", "tokens", "invalid_every", "jwt_cache_size",
                                                     "idle_wait", "quick")}

    def write_report(self) -> None:
        self.results["meta"]["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        matrix = self.summary()
        self.results["summary"] = matrix
        if self.results.get("ed25519"):
            self.results["ed25519_summary"] = self.ed25519_summary()
        (self.run_dir / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        plot_note = None
        if matrix:
            plot_note = self.plot(matrix, self.run_dir / "results.png")
        md = self.markdown(matrix, "results.png", plot_note)
        (self.run_dir / "results.md").write_text(md)
        if self.args.run_matrix:
            shutil.copyfile(self.run_dir / "results.json", self.out_root / "latest.json")
            (self.out_root / "latest.md").write_text(
                self.markdown(matrix, "latest.png", plot_note, link=f"{self.run_dir.name}/results.md"))
            png = self.run_dir / "results.png"
            if png.exists():
                shutil.copyfile(png, self.out_root / "latest.png")
            else:
                (self.out_root / "latest.png").unlink(missing_ok=True)  # never leave a stale plot
        if self.results.get("ed25519"):
            (self.out_root / "latest-ed25519.md").write_text(
                self.markdown([], None, None, link=f"{self.run_dir.name}/results.md", only_ed25519=True))
        log(f"report: {self.run_dir / 'results.md'}")

    def plot(self, rows: list[dict], path: Path) -> str | None:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            msg = ("plot skipped: matplotlib is not installed for this Python "
                   f"({sys.executable}); `{sys.executable} -m pip install matplotlib` and re-run")
            log(msg)
            return msg
        a = self.args
        metrics = (("rps", "req/s (median)"), ("p99_us", "p99 latency (ms)"),
                   ("envoy_cpu_us_per_req", "Envoy CPU µs per request"))
        fig, axes = plt.subplots(len(metrics), len(a.workloads), figsize=(5 * len(a.workloads), 11), squeeze=False)
        colors = {"passthrough": "#9e9e9e", "jwt_authn_nocache": "#1f77b4", "jwt_authn_cache": "#17becf",
                  "edge-jwt_nocache": "#ff9896", "edge-jwt": "#d62728"}
        width = 0.8 / max(1, len(a.setups))
        for col, w in enumerate(a.workloads):
            for row, (key, label) in enumerate(metrics):
                ax = axes[row][col]
                for i, s in enumerate(a.setups):
                    xs, ys, lo, hi = [], [], [], []
                    for j, conc in enumerate(a.concurrency):
                        r = next((x for x in rows if (x["concurrency"], x["workload"], x["setup"]) == (conc, w, s)), None)
                        if not r:
                            continue
                        xs.append(j + (i - (len(a.setups) - 1) / 2) * width)
                        if key == "rps":
                            ys.append(r["rps"])
                            lo.append(r["rps"] - r["rps_min"])
                            hi.append(r["rps_max"] - r["rps"])
                        elif key == "p99_us":
                            ys.append(r["p99_us"] / 1000)
                        else:
                            ys.append(r[key] or 0)
                    kw = {"yerr": [lo, hi], "capsize": 3} if key == "rps" and a.rounds > 1 else {}
                    ax.bar(xs, ys, width, label=s, color=colors.get(s), **kw)
                ax.set_xticks(range(len(a.concurrency)))
                ax.set_xticklabels([f"--concurrency {c}" for c in a.concurrency])
                ax.set_ylabel(label)
                ax.set_title(f"{w}")
                ax.grid(axis="y", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
        m = self.results["meta"]
        fig.suptitle(f"edge-jwt vs jwt_authn — Envoy {m.get('envoy_version', '?').split('/')[1] if '/' in m.get('envoy_version', '') else ''}, "
                     f"wrk -c{a.connections}, {a.duration}s × {a.rounds} rounds, {self.stamp}"
                     + ("  (bars: median, whiskers: min–max)" if a.rounds > 1 else ""), fontsize=10)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return None

    def markdown(self, rows: list[dict], png: str | None, plot_note: str | None, link: str | None = None,
                 only_ed25519: bool = False) -> str:
        m = self.results["meta"]
        L = []
        L.append(f"# edge-jwt benchmark — {self.stamp}" + (" (Ed25519 libraries)" if only_ed25519 else ""))
        L.append("")
        if link:
            L.append(f"Full run directory: [{link}]({link}).")
            L.append("")
        L.append("| | |")
        L.append("|---|---|")
        L.append(f"| command | `{m.get('command')}` |")
        L.append(f"| git | {m.get('git')} |")
        L.append(f"| Envoy | {m.get('envoy_version')} |")
        if m.get("wasm") and not only_ed25519:
            w = m["wasm"]
            L.append(f"| edge-jwt wasm | `{w['path']}` — **{w['bytes']:,} bytes ({w['bytes'] / 1024:.0f} KiB)**, "
                     f"sha256 {w['sha256'][:12]}, built {w['mtime']} |")
        L.append(f"| machine | {m.get('cpu')}, Linux {m.get('kernel')} |")
        L.append(f"| load generators | {m.get('wrk', 'wrk')}; {m.get('h2load', 'h2load')} |")
        s = m.get("settings", {})
        L.append(f"| settings | {s.get('duration')} s per run, {s.get('rounds')} round(s), warm-up {s.get('warmup')} s, "
                 f"wrk -c{s.get('connections')} -t{s.get('wrk_threads')}, {s.get('tokens'):,} distinct tokens, "
                 f"jwt_cache_size {s.get('jwt_cache_size')}{', QUICK (smoke only)' if s.get('quick') else ''} |")
        L.append(f"| elapsed | {m.get('elapsed_s')} s |")
        L.append("")
        if self.results["problems"]:
            L.append("**Problems seen during the run (figures below may be off):**")
            L.append("")
            L.extend(f"- {p}" for p in self.results["problems"])
            L.append("")
        if rows and not only_ed25519:
            L += self._md_matrix(rows)
            if png and not plot_note:
                L.append(f"![throughput and p99]({png})")
                L.append("")
            elif plot_note:
                L.append(f"_{plot_note}_")
                L.append("")
        if self.results.get("memory") and not only_ed25519:
            L += self._md_memory()
        if self.results.get("startup") and not only_ed25519:
            L += self._md_startup()
        if self.results.get("half_saturation") and not only_ed25519:
            L += self._md_half()
        if self.results.get("ed25519"):
            L += self._md_ed25519()
        L += self._md_method()
        return "\n".join(L) + "\n"

    def _md_matrix(self, rows: list[dict]) -> list[str]:
        a = self.args
        L = ["## Throughput and latency", "",
             f"wrk, {a.connections} connections, {a.wrk_threads} thread(s), {a.duration} s per run; median of "
             f"{a.rounds} round(s) (setups in rotating order). Ratios are req/s over the reference's req/s in the "
             f"same workload and concurrency. non-2xx: share of 401s (mixed: {100 * self.invalid_share:.0f}% "
             "of the tokens are tampered, so about that share is expected for the auth setups). Envoy CPU µs/req: "
             "Envoy's CPU time (all threads) over the run divided by the requests served — less sensitive than req/s "
             "to the load generator and to other processes. Other load: CPU cores busy with processes other than "
             f"this Envoy and wrk during the run (median; ⚠: some round above {BUSY_WARN} cores, "
             "its figures are suspect). Cache hits: the setup's own jwt_cache_hit / (hit + miss) counters over "
             "the run.", "",
             "| workload | concurrency | setup | req/s | p50 ms | p99 ms | vs passthrough | vs jwt_authn_nocache "
             "| vs jwt_authn_cache | Envoy CPU µs/req | non-2xx | cache hits | RSS MiB | other load |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            name = f"**{r['setup']}**" if r["setup"].startswith("edge-jwt") else r["setup"]
            L.append(f"| {r['workload']} | {r['concurrency']} | {name} | {fmt_num(r['rps'])} | {fmt_ms(r['p50_us'])} "
                     f"| {fmt_ms(r['p99_us'])} | {self._r(r, 'passthrough')} | {self._r(r, 'jwt_authn_nocache')} "
                     f"| {self._r(r, 'jwt_authn_cache')} | {fmt_num(r['envoy_cpu_us_per_req'])} "
                     f"| {100 * (r['non2xx_share'] or 0):.1f}% "
                     f"| {fmt_pct(r['cache_hit_share'])} "
                     f"| {fmt_mib(r['rss_kib'])} "
                     f"| {fmt_num(r['other_cores'], 2)}{' ⚠' if (r['other_cores_max'] or 0) > BUSY_WARN else ''} |")
        L.append("")
        return L

    @staticmethod
    def _r(r: dict, ref: str) -> str:
        v = r.get(f"vs_{ref}")
        return "–" if v is None else f"{v:.2f}×"

    def _md_memory(self) -> list[str]:
        mem = self.results["memory"]
        L = ["## Memory", "",
             "Envoy VmRSS from /proc/<pid>/status: once ready (before traffic) and after the warm-up and all "
             "measured runs; VmHWM is the peak.", "",
             "| concurrency | setup | RSS ready MiB | RSS after load MiB | peak (VmHWM) MiB | after load vs passthrough |",
             "|---:|---|---:|---:|---:|---:|"]
        for x in mem:
            base = next((y for y in mem if y["concurrency"] == x["concurrency"] and y["setup"] == "passthrough"), None)
            delta = "–"
            if base and x["after_load"].get("VmRSS") and base["after_load"].get("VmRSS"):
                delta = f"{(x['after_load']['VmRSS'] - base['after_load']['VmRSS']) / 1024:+.1f} MiB"
            L.append(f"| {x['concurrency']} | {x['setup']} | {fmt_mib(x['ready'].get('VmRSS'))} "
                     f"| {fmt_mib(x['after_load'].get('VmRSS'))} | {fmt_mib(x['after_load'].get('VmHWM'))} | {delta} |")
        L.append("")
        return L

    def _md_startup(self) -> list[str]:
        st = self.results["startup"]
        conc = st[0]["concurrency"] if st else "?"
        L = ["## Start to first verified request", "",
             f"From spawning Envoy (--concurrency {conc}, fixed listener port) to the first `200` for a request "
             "with a valid token, polled on fresh connections every ~2 ms; median of "
             f"{self.args.startup_rounds} start(s). `remote_jwks`: keys from `edge-jwt-issuer serve` on loopback "
             "(no local keys). Passthrough: first 200 at all, the floor.", "",
             "| setup | listener accepts ms | first 200 ms | answers before the first 200 |",
             "|---|---:|---:|---|"]
        labels = list(dict.fromkeys(x["label"] for x in st))
        for lab in labels:
            xs = [x for x in st if x["label"] == lab]
            before: dict = {}
            for x in xs:
                for k, v in x["statuses_before"].items():
                    before[k] = before.get(k, 0) + v
            L.append(f"| {lab} | {median([x['listen_ms'] for x in xs]):.0f} | {median([x['first_200_ms'] for x in xs]):.0f} "
                     f"| {', '.join(f'{k}×{v}' for k, v in sorted(before.items())) or 'none'} |")
        L.append("")
        return L

    def _md_half(self) -> list[str]:
        hs = self.results["half_saturation"]
        L = ["## p99 at half of saturation", "",
             f"`h2load --h1 -c{self.args.connections} --rps` (open loop, fixed rate) at half of edge-jwt's saturation "
             "req/s in the repeated-token workload at the same concurrency; the same rate for every setup, one "
             "token for all requests; latency from h2load's per-request log. Median of rounds. h2load sends at most "
             "one request at a time per HTTP/1.1 connection, so a setup that cannot keep up falls behind the rate "
             "instead of queueing (⚠: under 95% of the target; its p99 is that of an overloaded Envoy).", "",
             "| concurrency | setup | target req/s | achieved req/s | p50 ms | p99 ms | p99 added vs passthrough "
             "| other load |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for conc in dict.fromkeys(x["concurrency"] for x in hs):
            base = median([x["lat_p99_us"] for x in hs if x["concurrency"] == conc and x["setup"] == "passthrough"])
            for s in dict.fromkeys(x["setup"] for x in hs):
                xs = [x for x in hs if x["concurrency"] == conc and x["setup"] == s]
                if not xs:
                    continue
                p99 = median([x["lat_p99_us"] for x in xs])
                added = "–" if base is None or s == "passthrough" else f"{(p99 - base) / 1000:+.2f} ms"
                achieved = median([x["achieved_rps"] for x in xs])
                short = achieved is not None and achieved < 0.95 * xs[0]["target_rps"]
                L.append(f"| {conc} | {s} | {fmt_num(xs[0]['target_rps'])} | {fmt_num(achieved)}{' ⚠' if short else ''} "
                         f"| {fmt_ms(median([x['lat_p50_us'] for x in xs]))} | {fmt_ms(p99)} | {added} "
                         f"| {fmt_num(median([x['other_cores'] for x in xs]), 2)} |")
        L.append("")
        return L

    def _md_ed25519(self) -> list[str]:
        rows = self.ed25519_summary()
        a = self.args
        L = ["## Ed25519 library inside Envoy", "",
             f"One Envoy per build (--concurrency 1), `wrk -c1 -t1`, {a.duration} s per run, distinct tokens and the "
             "filter's verified-token cache off, so every request to `/` verifies. Cost per token = latency of `/` "
             f"(JWT required) minus `{BYPASS_PATH}` (bypass rule, same filter, same request bytes): token parsing, "
             "signature verification, claim checks, the verdict header. Headline: difference of the p50 latencies "
             "(µs, min–max over rounds in brackets); also the difference of the means and of Envoy's CPU time per "
             f"request. Medians over {a.rounds} round(s), libraries and paths in rotating order.", "",
             "| library | µs per token (p50 diff) | µs (mean diff) | Envoy CPU µs per token | `/` p50 µs "
             "| bypass p50 µs | other load | wasm bytes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            L.append(f"| {r['lib']} | **{r['us_per_verify']:.0f}** ({r['us_per_verify_min']:.0f}–{r['us_per_verify_max']:.0f}) "
                     f"| {r['us_per_verify_mean']:.0f} | {fmt_num(r['cpu_us_per_verify'], 0)} "
                     f"| {r['verify_p50_us']:.0f} | {r['bypass_p50_us']:.0f} "
                     f"| {fmt_num(r['other_cores'], 2)}{' ⚠' if (r['other_cores'] or 0) > BUSY_WARN else ''} "
                     f"| {r['wasm_bytes']:,} |")
        if len(rows) == 2 and rows[1]["us_per_verify"] and rows[1]["cpu_us_per_verify"]:
            L.append("")
            L.append(f"{rows[0]['lib']} takes {rows[0]['us_per_verify'] / rows[1]['us_per_verify']:.2f}× the time "
                     f"per token of {rows[1]['lib']} (p50; Envoy CPU: "
                     f"{rows[0]['cpu_us_per_verify'] / rows[1]['cpu_us_per_verify']:.2f}×).")
        L.append("")
        return L

    def _md_method(self) -> list[str]:
        if not self.args.run_matrix:
            return ["## Method", "",
                    "- Same Envoy binary; both builds from this checkout with the same toolchain and flags "
                    "(`scripts/bench.sh --ed25519` builds them into bench-results/.build/), verified-token cache "
                    "off (`jwt_cache_config.jwt_cache_size: 0`) where the build supports it.",
                    "- Re-run: `scripts/bench.sh --ed25519`; `--help` for options.", ""]
        return ["## Method", "",
                "- Same Envoy binary, one Envoy per setup, listener on 127.0.0.1 (kernel-chosen port), route "
                "`direct_response` 200, no access log, `-l " + self.args.envoy_log_level + "`.",
                "- Auth setups: same JWKS (issuer's current and next key), issuer, audience, "
                "`Authorization: Bearer`, forward the token, `exp` required, 60 s clock skew; `/public` bypasses.",
                "- jwt_authn_cache: `jwt_cache_config: {jwt_cache_size: " + str(self.args.jwt_cache_size) + "}`.",
                f"- distinct: {self.args.tokens:,} tokens cycled in order by every wrk thread (different start "
                "points), " + ("more than the jwt_authn cache holds, so an LRU cache never hits"
                               if self.args.tokens > self.args.jwt_cache_size else
                               "NOT more than the jwt_authn cache holds: once a pass is done, jwt_authn_cache hits")
                + "; repeated: one token; mixed: another pool of as many tokens with every "
                f"{self.args.invalid_every}th signature tampered (one bit of S flipped).",
                "- The load generator runs on the same machine and competes with Envoy for the CPUs: compare setups "
                "within a run, not absolute figures across machines.",
                "- Re-run: `scripts/bench.sh` (defaults), `scripts/bench.sh --ed25519`, `scripts/bench.sh --all`; "
                "`--help` for options.", ""]

    # -- driver ------------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        try:
            self.collect_meta()
            self.prepare_tokens()
            if "edge-jwt_nocache" in a.setups and self.wasm and not self.edge_cache_supported(self.wasm):
                a.setups.remove("edge-jwt_nocache")
                self.problem("edge-jwt_nocache skipped: this wasm build does not take jwt_cache_config")
            if a.run_matrix:
                log(f"matrix: {len(a.setups)} setups × {len(a.workloads)} workloads × concurrency {a.concurrency} "
                    f"× {a.rounds} round(s) × {a.duration}s")
                self.run_matrix()
            if a.run_extras:
                self.run_startup()
                self.run_half_saturation()
            if a.run_ed25519:
                self.run_ed25519()
        finally:
            self.stop_all()
        self.write_report()
        if not a.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log(f"work files kept in {self.work}")
        return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--ed25519", action="store_true",
                      help="only the Ed25519 library comparison (dalek vs compact builds, µs per verification)")
    mode.add_argument("--all", action="store_true", help="matrix, extras and the Ed25519 comparison")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 s per run, 1 round, 2,000 tokens, no warm-up (figures are not meaningful)")
    p.add_argument("--duration", type=seconds, default=None, help="seconds per measured run (default 10s)")
    p.add_argument("--rounds", type=int, default=None, help="rounds; the report gives the median (default 3)")
    p.add_argument("--warmup", type=seconds, default=None,
                   help="warm-up run per setup and workload before measuring (default 2s)")
    p.add_argument("--connections", type=int, default=16, help="wrk/h2load connections (default 16)")
    p.add_argument("--wrk-threads", type=int, default=1,
                   help="wrk threads (default 1: on 2 CPUs a second wrk thread only takes CPU from Envoy)")
    p.add_argument("--concurrency", default="1,2", help="Envoy --concurrency values (default 1,2)")
    p.add_argument("--setups", default=",".join(SETUPS), help=f"subset of {','.join(SETUPS)}")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    p.add_argument("--tokens", type=int, default=None, help="distinct tokens (default 50000, quick 2000)")
    p.add_argument("--invalid-every", type=int, default=10, help="mixed: every Nth token is tampered (default 10)")
    p.add_argument("--jwt-cache-size", type=int, default=10000, help="jwt_authn_cache jwt_cache_size (default 10000)")
    p.add_argument("--no-extras", action="store_true",
                   help="skip start-up time and p99 at half saturation")
    p.add_argument("--startup-rounds", type=int, default=None, help="starts per start-up case (default = rounds)")
    p.add_argument("--startup-concurrency", type=int, default=2, help="Envoy --concurrency for start-up (default 2)")
    p.add_argument("--idle-wait", type=float, default=None,
                   help="before each measured run wait up to this many seconds for the machine to be idle "
                        "(< 0.15 busy cores; default 5, quick 0)")
    p.add_argument("--envoy-log-level", default="warning", help="Envoy -l (default warning)")
    p.add_argument("--out", default=str(ROOT / "bench-results"), help="results root (default bench-results/)")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch directory (tokens, Envoy logs)")
    a = p.parse_args(argv)
    a.argv = argv
    q = a.quick
    a.duration = a.duration if a.duration is not None else (1 if q else 10)
    a.rounds = a.rounds if a.rounds is not None else (1 if q else 3)
    a.warmup = a.warmup if a.warmup is not None else (0 if q else 2)
    a.tokens = a.tokens if a.tokens is not None else (2000 if q else 50000)
    a.idle_wait = a.idle_wait if a.idle_wait is not None else (0 if q else 5)
    a.startup_rounds = a.startup_rounds if a.startup_rounds is not None else a.rounds
    a.concurrency = [int(c) for c in str(a.concurrency).split(",") if c.strip()]
    a.setups = [s.strip() for s in a.setups.split(",") if s.strip()]
    a.workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    for s in a.setups:
        if s not in SETUPS:
            p.error(f"unknown setup {s!r}; choose from {SETUPS}")
    for w in a.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {WORKLOADS}")
    if a.duration < 1 or a.rounds < 1 or a.tokens < 1 or a.connections < 1 or a.invalid_every < 2:
        p.error("duration, rounds, tokens, connections must be >= 1 and --invalid-every >= 2")
    if a.wrk_threads > a.connections:
        p.error("--wrk-threads may not exceed --connections")
    a.run_matrix = not a.ed25519
    a.run_extras = a.run_matrix and not a.no_extras
    a.run_ed25519 = a.ed25519 or a.all
    if a.run_extras and "edge-jwt" not in a.setups:
        a.run_extras = False
    a.setups = [s for s in SETUPS if s in a.setups]  # canonical order
    return a


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    def on_term(signum, frame):  # SIGTERM: unwind through the finally blocks that stop Envoy
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        bench = Bench(args)
    except BenchError as e:
        log(f"error: {e}")
        return 2
    try:
        return bench.run()
    except BenchError as e:
        log(f"error: {e}")
        log(f"work files (tokens, Envoy logs) kept in {bench.work}")
        try:
            bench.run_dir.rmdir()  # only if nothing was written
        except OSError:
            pass
        return 1
    except KeyboardInterrupt:
        log(f"interrupted; work files in {bench.work}")
        return 130
    except Exception:
        log(f"unexpected error; work files (tokens, Envoy logs) kept in {bench.work}")
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
