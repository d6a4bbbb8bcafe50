#!/usr/bin/env python3
"""edge-jwt soak test under faults (issue 5). Run through scripts/soak.sh; `--help` lists
the options.

What runs
---------
One Envoy (`--concurrency 2`, direct_response 200 behind the filter, no access log) with
edge-jwt configured for a `remote_jwks` served by a JWKS server inside this process
(tests/e2e/harness JwksServer), refreshed often on purpose:

    cache_duration 1s, min_cache_duration 1s, refetch_cooldown 1s, max_stale 60s,
    retry back-off 0.25s..1s, callout timeout 2s

Load: N Python threads (default 16), one persistent HTTP/1.1 connection each, every
request's token drawn at send time from a mix (default 85 % valid / 15 % invalid) and
recorded as (send time, answer time, token descriptor, status). Optionally wrk in
parallel (default 2 connections) cycling valid tokens from a file that is rewritten when
the signing key changes; its non-2xx answers are counted per second by its Lua script.

Fault schedule (scaled to --duration; cycles of at most ~150 s are repeated):
    normal -> rotation (publish next, sign with both, promote next, retire old)
    -> JWKS server down (connection refused) -> garbage (HTTP 500, HTML, not JSON,
    not a JWKS, empty keys, oversized body, hang) -> back to ok (-> slow: 1 s delay)
    -> another rotation -> normal.
Outage plus garbage are back to back and capped (--fault-window-max, default 0.6 x
max_stale) so that the policy never demands fail-closed: max_stale is larger than the
longest stretch without a good fetch.

Truth rules (what "valid" means at send time)
---------------------------------------------
The JWKS server log tells when each JWKS version was actually fetched. A *good fetch* is a
request the server answered in mode ok (or delay, counted when the answer left), at least
EDGE s away from any change of mode or key set (so which body it got is certain).
PROPAGATION is the time every worker VM needs to see a fetched set (the fetching VM
stores it at once, the others read shared data on their 1 s tick).

A *possible fetch* is any fetch answered in (or within EDGE of) mode ok/delay: bounds that
must not come too late use these instead.

* A key is *live* from (first good fetch of a set containing it) + PROPAGATION, until
  its retirement: a token it signed is valid if sent after it became live and answered
  before the first possible fetch after the set without it was published.
* A key is *retired* from (first good fetch of a set without it) + PROPAGATION: its
  tokens are invalid from then on (the verified-token cache must not keep them alive).
* In between (published but not yet fetched everywhere, or being retired) a token is
  *indeterminate*: counted, shown, never judged. The schedule keeps these windows short:
  it never signs with a key before it is live, and it never publishes, promotes or
  retires while the server is down or serving garbage (a key change always lands in an
  ok phase and the schedule waits until it is fetched before any fault starts). A few
  next-key tokens are sent on purpose right after a publish ("early_next", exercising
  the unknown-kid refetch); they are indeterminate by this rule and reported on their own.
* Expiry: a token is valid while the answer comes before exp + clock skew (60 s) - 0.5 s,
  invalid when sent after exp + skew + 1.5 s ("valid_expiring" tokens cross that line
  during the run, with the verified-token cache warm).
* Inherently invalid kinds (tampered payload, signature by another key under a live kid,
  unknown kid, expired, not yet valid, wrong iss, wrong aud, alg none, HS256 keyed with the
  public key, oversized, garbage, missing) are invalid whatever the keys.
* Policy: when even the last possible fetch is older than TTL + max_stale + 2 s, and no
  possible fetch came before the answer, the filter must fail closed (503 + Retry-After,
  body "Jwks is not available"); such requests are class "policy" (a 2xx breaks rule 2).
  A fail-closed 503 is also allowed, not demanded, within 2 s of that line and for
  PROPAGATION after the fetch that ends such a window (the other VM's next tick); anywhere
  else it breaks rule 3. The default schedule never gets there; `--max-stale 4
  --fault-window-max 14` makes a run that does (it must still pass).

Rules (exit status 1 when one is broken)
----------------------------------------
1. zero valid tokens refused: every valid-at-send-time token got 200;
2. zero invalid tokens accepted: no invalid token got a 2xx, and no "policy" request got
   a 2xx (fail-open past max_stale);
3. no 5xx other than the configured fail-closed answer where the policy demanded it;
4. every request was answered (no connection error, no timeout), wrk included;
5. wrk (valid tokens only) got no non-2xx (a fail-closed 503, told apart by its body, in a
   wall-clock second where the policy allowed it excepted);
6. after every fault window the filter fetched the JWKS again within RECOVERY_BOUND s, and
   every key change was fetched within SETTLE_BOUND s.
The run is also failed when it would prove nothing (no valid or no invalid request judged).

Also reported, never judged: statuses of "early_next" tokens by time since the first fetch
of their key, answer times of unknown-kid tokens per phase (the filter may hold them for a
forced refetch), JWKS fetches per server mode, Envoy stats (`/stats?filter=edge_jwt`, the
`jwks` cluster, downstream status classes), Envoy RSS and CPU, and the Envoy log's
edge-jwt lines, warnings and errors.
"""
from __future__ import annotations

import argparse
import array
import bisect
import collections
import datetime as dt
import hashlib
import hmac
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402

from harness.envoy import Envoy, EnvoyStartError  # noqa: E402
from harness.jwks_server import JwksServer  # noqa: E402
from harness.ports import LOOPBACK  # noqa: E402

ISS = "https://issuer.soak.test"
AUD = "api.soak.test"
PLUGIN = "soak"
PATH = "/soak"
TTL_S = 1.0
SKEW_S = 60
PROPAGATION = 2.0        # s: fetch seen by every worker VM (1 s tick + margin)
EDGE = 0.05              # s: fetches this close to a mode/key-set change are ambiguous
SETTLE_BOUND = 15.0      # s: a key change must be fetched within this (else a finding)
RECOVERY_BOUND = 10.0    # s: after a fault window, a good fetch must come within this
REQUEST_TIMEOUT = 15.0   # s: client side (initial_fetch_wait is 5 s)
CYCLE_MAX = 150.0        # s: longer runs repeat the fault cycle
SETTLE_ESTIMATE = 2.5    # s: for planning only
FAILCLOSED = 1503        # recorded status of a fail-closed 503 (body "Jwks is not available")
NO_ANSWER = 0            # recorded status when no HTTP answer came back
DELAY_S = 1.0            # delay mode: answer after this long (callout timeout is 2 s)
HANG_S = 3.0             # hang mode: hold the request this long, then drop it
SAMPLE_LIMIT = 200       # suspicious answers kept with body and headers, per status
DESC_LIMIT = 65000       # token descriptors (array('H'))

VALID, INVALID, INDET, POLICY = "valid", "invalid", "indeterminate", "policy"
PAUSING_KINDS = ("unknown_kid", "retired_key")  # tokens the filter may hold for a forced refetch
TRUTHS = (VALID, INVALID, INDET, POLICY)


def log(msg: str) -> None:
    print(f"soak: {msg}", file=sys.stderr, flush=True)


class SetupError(RuntimeError):
    pass


# -- JOSE ------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def seg(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


class Key:
    def __init__(self, idx: int) -> None:
        self.idx = idx
        self.kid = f"soak-{idx}-{uuid.uuid4().hex[:8]}"
        self.priv = Ed25519PrivateKey.generate()
        self.pub = self.priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(self.pub), "use": "sig",
                    "alg": "EdDSA", "kid": self.kid}

    def sign(self, header: dict, payload: dict) -> str:
        si = f"{seg(header)}.{seg(payload)}"
        return f"{si}.{b64url(self.priv.sign(si.encode('ascii')))}"

    def token(self, **claims) -> str:
        return self.sign({"alg": "EdDSA", "typ": "JWT", "kid": self.kid}, payload(**claims))


def payload(**over) -> dict:
    now = int(time.time())
    p = {"iss": ISS, "aud": AUD, "sub": f"user-{random.randrange(10**6)}", "iat": now - 5,
         "exp": now + 7200, "jti": uuid.uuid4().hex}
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


# -- tokens ----------------------------------------------------------------------


@dataclass(frozen=True)
class Desc:
    """What a token is, for judging it later: its kind, the key that signed it (-1:
    none of ours), its exp (wall clock, only when it matters) and whether it is invalid
    whatever the keys."""
    kind: str
    key: int
    exp: float | None
    invalid: bool


VALID_MIX = (("valid", 0.70), ("valid_fresh", 0.20), ("valid_expiring", 0.10))
INVALID_MIX = (("tampered", 1.0), ("bad_sig_known_kid", 1.0), ("unknown_kid", 0.5),
               ("expired", 1.0), ("not_yet_valid", 0.5), ("wrong_iss", 0.5), ("wrong_aud", 0.5),
               ("alg_none", 1.0), ("hs256_pubkey", 0.5), ("oversized", 0.3), ("garbage", 0.5),
               ("missing", 0.5), ("retired_key", 1.0))
EARLY_SHARE = 0.03  # of all requests while a freshly published key is settling
POOL_VALID = 200
POOL_EXPIRING = 40
POOL_INVALID = 20


class Tokens:
    """Token pools per key and the current choice policy (set by the schedule)."""

    def __init__(self, invalid_share: float) -> None:
        self.invalid_share = invalid_share
        self.lock = threading.Lock()
        self.descs: list[Desc] = []
        self._desc_ids: dict[Desc, int] = {}
        self.keys: list[Key] = []
        self.pools: dict[tuple[str, int], list[tuple[str, int]]] = {}
        self.attacker = Key(-1)
        # Policy, replaced as whole objects (threads read without the lock).
        self.signing: tuple[tuple[int, float], ...] = ()
        self.early: int | None = None
        self.retired: tuple[int, ...] = ()
        self.deadline_wall = time.time() + 3600

    def desc(self, d: Desc) -> int:
        with self.lock:
            i = self._desc_ids.get(d)
            if i is None:
                if len(self.descs) >= DESC_LIMIT:
                    raise RuntimeError("too many token descriptors")
                i = len(self.descs)
                self.descs.append(d)
                self._desc_ids[d] = i
            return i

    def new_key(self) -> Key:
        k = Key(len(self.keys))
        self.keys.append(k)
        self._fill(k)
        return k

    def _fill(self, k: Key) -> None:
        """Pools for one key, made before the key is published."""
        now = time.time()
        far = int(self.deadline_wall) + 3600
        dv = self.desc(Desc("valid", k.idx, None, False))
        self.pools[("valid", k.idx)] = [(k.token(exp=far), dv) for _ in range(POOL_VALID)]
        self.pools[("early_next", k.idx)] = [(k.token(exp=far), self.desc(Desc("early_next", k.idx, None, False)))
                                             for _ in range(POOL_INVALID)]
        self.pools[("retired_key", k.idx)] = [(k.token(exp=far), self.desc(Desc("retired_key", k.idx, None, False)))
                                              for _ in range(POOL_INVALID)]
        # Tokens whose exp + skew falls inside the run, spread over the next two minutes
        # (or what is left of the run), so cached tokens have to expire under load.
        span = max(10.0, min(120.0, self.deadline_wall - now))
        exp_pool = []
        for i in range(POOL_EXPIRING):
            exp = int(now - SKEW_S + 4 + span * (i + 0.5) / POOL_EXPIRING)
            tok = k.token(exp=exp, iat=exp - 600)
            exp_pool.append((tok, self.desc(Desc("valid_expiring", k.idx, float(exp), False))))
        self.pools[("valid_expiring", k.idx)] = exp_pool
        nowi = int(now)

        def inv(kind: str, make: Callable[[], str]) -> None:
            d = self.desc(Desc(kind, k.idx, None, True))
            self.pools[(kind, k.idx)] = [(make(), d) for _ in range(POOL_INVALID)]

        def tampered() -> str:
            h, p, s = k.token(exp=far).split(".")
            claims = payload(exp=far, sub="admin", role="root")
            return f"{h}.{seg(claims)}.{s}"

        hdr = {"alg": "EdDSA", "typ": "JWT", "kid": k.kid}
        inv("tampered", tampered)
        inv("bad_sig_known_kid", lambda: self.attacker.sign(hdr, payload(exp=far)))
        inv("expired", lambda: k.token(exp=nowi - 3600, iat=nowi - 7200))
        inv("not_yet_valid", lambda: k.token(exp=far, nbf=nowi + 3600))
        inv("wrong_iss", lambda: k.token(exp=far, iss="https://evil.example"))
        inv("wrong_aud", lambda: k.token(exp=far, aud="api.other.test"))
        inv("alg_none", lambda: f"{seg({'alg': 'none', 'typ': 'JWT', 'kid': k.kid})}.{seg(payload(exp=far))}.")

        def hs256() -> str:
            si = f"{seg({'alg': 'HS256', 'typ': 'JWT', 'kid': k.kid})}.{seg(payload(exp=far))}"
            mac = hmac.new(k.jwk["x"].encode(), si.encode(), hashlib.sha256).digest()
            return f"{si}.{b64url(mac)}"

        inv("hs256_pubkey", hs256)
        inv("oversized", lambda: k.token(exp=far, pad="x" * 9000))
        if ("unknown_kid", -1) not in self.pools:
            d = self.desc(Desc("unknown_kid", -1, None, True))
            self.pools[("unknown_kid", -1)] = [
                (self.attacker.sign({"alg": "EdDSA", "typ": "JWT", "kid": f"nope-{uuid.uuid4().hex[:10]}"},
                                    payload(exp=far)), d) for _ in range(POOL_VALID)]
            d = self.desc(Desc("garbage", -1, None, True))
            self.pools[("garbage", -1)] = [(g, d) for g in (
                "not-a-jwt", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9..", "eyJ" + "A" * 300 + ".e30.AA",
                "%00%ff", "Bearer Bearer", "e30.e30.e30")]
            self.pools[("missing", -1)] = [("", self.desc(Desc("missing", -1, None, True)))]

    def fresh(self, k: Key) -> tuple[str, int]:
        return k.token(exp=int(self.deadline_wall) + 3600), self.desc(Desc("valid_fresh", k.idx, None, False))

    # -- choice (called by load threads) --
    def pick(self, rnd: random.Random) -> tuple[str | None, int]:
        signing, early, retired = self.signing, self.early, self.retired
        if early is not None and rnd.random() < EARLY_SHARE:
            return self._from(("early_next", early), rnd)
        if rnd.random() < self.invalid_share:
            kinds = [(n, w) for n, w in INVALID_MIX if n != "retired_key" or retired]
            kind = _weighted(kinds, rnd)
            if kind == "retired_key":
                return self._from(("retired_key", rnd.choice(retired)), rnd)
            if kind in ("unknown_kid", "garbage", "missing"):
                tok, d = self._from((kind, -1), rnd)
                return (None if kind == "missing" else tok), d
            return self._from((kind, signing[0][0]), rnd)
        key = _weighted(signing, rnd)
        kind = _weighted(VALID_MIX, rnd)
        if kind == "valid_fresh":
            return self.fresh(self.keys[key])
        return self._from((kind, key), rnd)

    def _from(self, pool: tuple[str, int], rnd: random.Random) -> tuple[str, int]:
        return rnd.choice(self.pools[pool])


def _weighted(items, rnd: random.Random):
    total = sum(w for _, w in items)
    x = rnd.random() * total
    for v, w in items:
        x -= w
        if x < 0:
            return v
    return items[-1][0]


# -- JWKS server bookkeeping -----------------------------------------------------


class Jwks:
    """The JWKS server plus a log of every mode and key-set change (monotonic time)."""

    def __init__(self, keys: list[Key]) -> None:
        self.server = JwksServer(path="/.well-known/jwks.json")
        self.server.hang_seconds = HANG_S
        self.server.delay_seconds = DELAY_S
        self.mode = "ok"
        self.published: tuple[int, ...] = ()
        self.modes: list[tuple[float, str]] = [(0.0, "ok")]
        self.versions: list[tuple[float, frozenset[int]]] = []
        self.keys = keys
        self.lock = threading.Lock()

    def publish(self, idxs: list[int]) -> None:
        jwks = {"keys": [self.keys[i].jwk for i in idxs]}
        with self.lock:
            self.server.jwks = jwks  # one reference swap; a handler reads it whole
            self.published = tuple(idxs)
            self.versions.append((time.monotonic(), frozenset(idxs)))

    def set_mode(self, mode: str, **kw) -> None:
        with self.lock:
            self.server.set_mode(mode, **kw)
            label = mode if mode != "status" else f"status {kw.get('status_code', self.server.status_code)}"
            self.mode = label
            self.modes.append((time.monotonic(), label))

    # -- reading the log --
    def _near_change(self, t: float) -> bool:
        for log_ in (self.modes, self.versions):
            i = bisect.bisect_left(log_, (t,))
            for j in (i - 1, i):
                if 0 <= j < len(log_) and abs(log_[j][0] - t) < EDGE:
                    return True
        return False

    def mode_at(self, t: float) -> str:
        i = bisect.bisect_right(self.modes, (t, "\uffff")) - 1
        return self.modes[max(i, 0)][1]

    def version_at(self, t: float) -> frozenset[int] | None:
        i = bisect.bisect_right([v[0] for v in self.versions], t) - 1  # on time only
        return self.versions[i][1] if i >= 0 else None

    def good_fetches(self, upto: float | None = None) -> list[tuple[float, frozenset[int]]]:
        """(time the answer left, key set) of every fetch whose body is certain."""
        out = []
        for h in self.server.timestamps:
            if upto is not None and h > upto:
                break
            mode = self.mode_at(h)
            if mode not in ("ok", "delay") or self._near_change(h):
                continue
            t = h + (DELAY_S if mode == "delay" else 0.0)
            if mode == "delay" and (self._near_change(t) or self.mode_at(t) != "delay"):
                continue
            v = self.version_at(h)
            if v is not None:
                out.append((t, v))
        return out

    def possible_fetches(self) -> list[float]:
        """Times of every fetch that may have been good: answered in mode ok/delay, or
        within EDGE of a change to or from such a mode. Bounds that must not be too late
        (how long a retired key stays valid, when fail-closed is demanded) use these."""
        out = []
        for h in self.server.timestamps:
            if any(self.mode_at(h + e) in ("ok", "delay") for e in (-EDGE, 0.0, EDGE)):
                out.append(h)
        return out

    def settled(self, after: float, want: Callable[[frozenset[int]], bool]) -> float | None:
        """Time from which the first good fetch after `after` whose set satisfies `want` is
        seen by every VM (fetch + PROPAGATION), or None if there was no such fetch yet."""
        for t, v in self.good_fetches():
            if t > after + EDGE and want(v):
                return t + PROPAGATION
        return None


# -- schedule --------------------------------------------------------------------


GARBAGE_BRIEF = [("status", {"status_code": 500}), ("html", {}), ("not_jwks", {}),
                 ("empty_keys", {}), ("oversized", {})]
GARBAGE_FULL = [("status", {"status_code": 500}), ("html", {}), ("not_json", {}), ("not_jwks", {}),
                ("empty_keys", {}), ("oversized", {}), ("hang", {})]


@dataclass
class Step:
    name: str
    weight: float = 0.0          # share of the stretchable time
    min_s: float = 0.0
    action: str | None = None    # publish_next | sign_both | promote | retire
    mode: tuple[str, dict] | None = None
    bad: bool = False            # part of a fault window (no good fetch possible)
    settle: str | None = None    # pub | ret: wait until the change is fetched everywhere
    recover: bool = False        # wait for the first good fetch after a fault window


def build_plan(duration: float, full: bool) -> tuple[list[Step], int]:
    cycles = max(1, round(duration / CYCLE_MAX))
    garbage = GARBAGE_FULL if full else GARBAGE_BRIEF
    steps = [Step("normal", 1.0, 1.0)]

    def rotation(n: int) -> list[Step]:
        return [Step(f"rotation {n}: publish next", action="publish_next", settle="pub"),
                Step(f"rotation {n}: sign with current+next", 1.0, 1.0, action="sign_both"),
                Step(f"rotation {n}: promote next (grace)", 0.5, 2.0, action="promote"),
                Step(f"rotation {n}: retire old", action="retire", settle="ret"),
                Step(f"rotation {n}: after retirement", 0.5, 1.0)]

    n = 1
    for _ in range(cycles):
        steps += rotation(n)
        n += 1
        steps.append(Step("outage: connection refused", 1.5, 2.0, mode=("refuse", {}), bad=True))
        for mode, kw in garbage:
            label = f"status {kw['status_code']}" if mode == "status" else mode
            steps.append(Step(f"garbage: {label}", 0.3, 1.2, mode=(mode, kw), bad=True))
        steps.append(Step("recovery: ok", 1.0, 2.0, mode=("ok", {}), recover=True))
        if full:
            steps.append(Step("slow JWKS: 1 s delay", 0.5, 3.0, mode=("delay", {})))
            steps.append(Step("ok", 0.3, 1.0, mode=("ok", {})))
        steps += rotation(n)
        n += 1
        steps.append(Step("normal", 0.5, 1.0))
    return steps, cycles


@dataclass
class PhaseRec:
    name: str
    start: float
    end: float = 0.0
    jwks_mode: str = "ok"
    published: str = ""
    signing: str = ""
    note: str = ""


class Schedule(threading.Thread):
    def __init__(self, steps: list[Step], tokens: Tokens, jwks: Jwks, fault_cap: float,
                 deadline: float, wrk_file: Path | None) -> None:
        super().__init__(name="schedule", daemon=True)
        self.steps, self.tokens, self.jwks = steps, tokens, jwks
        self.fault_cap, self.deadline, self.wrk_file = fault_cap, deadline, wrk_file
        self.phases: list[PhaseRec] = []
        self.findings: list[str] = []
        self.recoveries: list[dict] = []
        self.settles: list[dict] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.current: Key = tokens.keys[0]
        self.next: Key | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by main
            self.error = e

    def _signing_label(self) -> str:
        return ", ".join(f"{self.tokens.keys[k].kid} {w:.0%}" for k, w in self.tokens.signing)

    def _sleep_until(self, t: float) -> None:
        while not self.stop.is_set():
            left = t - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(min(left, 0.2))

    def _stretch(self, i: int) -> float:
        """Duration of stretchable step i, from the time left (adaptive)."""
        rest = self.steps[i:]
        fixed = sum(SETTLE_ESTIMATE for s in rest if s.settle)
        left = max(0.0, self.deadline - time.monotonic() - fixed)
        total_w = sum(s.weight for s in rest) or 1.0
        st = self.steps[i]
        d = left * st.weight / total_w
        if st.bad:
            # The whole contiguous fault window stays under the cap.
            j = i
            while j > 0 and self.steps[j - 1].bad:
                j -= 1
            k = i
            while k + 1 < len(self.steps) and self.steps[k + 1].bad:
                k += 1
            group = self.steps[j:k + 1]
            group_w = sum(s.weight for s in group)
            group_min = sum(s.min_s for s in group)
            if d * group_w / st.weight > self.fault_cap:
                d = max(0.0, self.fault_cap - group_min) * st.weight / group_w + st.min_s
        return max(st.min_s, d)

    def _write_wrk_tokens(self, key: Key) -> None:
        if self.wrk_file is None:
            return
        toks = [t for t, _ in self.tokens.pools[("valid", key.idx)][:100]]
        tmp = self.wrk_file.with_suffix(".tmp")
        tmp.write_text("\n".join(toks) + "\n")
        os.replace(tmp, self.wrk_file)

    def _wait_settled(self, after: float, want, what: str) -> float | None:
        bound = time.monotonic() + SETTLE_BOUND
        while not self.stop.is_set():
            at = self.jwks.settled(after, want)
            if at is not None:
                self._sleep_until(at)
                return at
            if time.monotonic() > bound:
                self.findings.append(f"{what}: no good fetch of the new key set within {SETTLE_BOUND:.0f} s")
                return None
            self.stop.wait(0.05)
        return None

    def _run(self) -> None:
        tk, js = self.tokens, self.jwks
        for i, st in enumerate(self.steps):
            if self.stop.is_set():
                break
            t0 = time.monotonic()
            rec = PhaseRec(st.name, t0)
            self.phases.append(rec)
            if st.mode is not None:
                mode, kw = st.mode
                js.set_mode(mode, **kw)
            if st.action == "publish_next":
                self.next = tk.new_key()
                js.publish([self.current.idx, self.next.idx])
                tk.early = self.next.idx
            elif st.action == "sign_both":
                tk.signing = ((self.current.idx, 0.5), (self.next.idx, 0.5))
            elif st.action == "promote":
                tk.signing = ((self.next.idx, 0.8), (self.current.idx, 0.2))
                self._write_wrk_tokens(self.next)
            elif st.action == "retire":
                old = self.current
                js.publish([self.next.idx])
                tk.signing = ((self.next.idx, 1.0),)
                self.current, self.next = self.next, None
                self._retiring = old
            rec.jwks_mode = js.mode
            rec.published = ", ".join(tk.keys[k].kid for k in js.published)
            rec.signing = self._signing_label()
            if st.settle == "pub":
                k = self.next.idx
                at = self._wait_settled(t0, lambda v, k=k: k in v, st.name)
                tk.early = None
                self.settles.append({"step": st.name, "seconds": None if at is None else round(at - t0, 2)})
            elif st.settle == "ret":
                k = self._retiring.idx
                at = self._wait_settled(t0, lambda v, k=k: k not in v, st.name)
                if at is not None:
                    tk.retired = tuple(tk.retired) + (k,)
                self.settles.append({"step": st.name, "seconds": None if at is None else round(at - t0, 2)})
            else:
                end = t0 + self._stretch(i)
                if st.recover:
                    bound = t0 + RECOVERY_BOUND
                    got = None
                    while not self.stop.is_set() and time.monotonic() < bound:
                        got = next((t for t, _ in js.good_fetches() if t > t0 + EDGE), None)
                        if got is not None:
                            break
                        self.stop.wait(0.05)
                    self.recoveries.append({"step": st.name,
                                            "seconds": None if got is None else round(got - t0, 2)})
                    if got is None and not self.stop.is_set():
                        self.findings.append(f"{st.name}: no good JWKS fetch within {RECOVERY_BOUND:.0f} s "
                                             "after the fault window ended")
                    rec.note = "first good fetch after {}".format(
                        "none" if got is None else f"{got - t0:.2f} s")
                self._sleep_until(end)
            rec.end = time.monotonic()


# -- load ------------------------------------------------------------------------


class Loader:
    def __init__(self, port: int, tokens: Tokens, threads: int, seed: int) -> None:
        self.port, self.tokens, self.n, self.seed = port, tokens, threads, seed
        self.stop = threading.Event()
        self.ts = [array.array("d") for _ in range(threads)]
        self.dur = [array.array("f") for _ in range(threads)]
        self.desc = [array.array("H") for _ in range(threads)]
        self.status = [array.array("H") for _ in range(threads)]
        self.errors: collections.Counter = collections.Counter()
        self.samples: dict[tuple[int, int], dict] = {}
        self.sample_counts: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
                        for i in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> None:
        self.stop.set()
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, end - time.monotonic()))

    def _suspicious(self, d: Desc, status: int) -> bool:
        if status not in (200, 401):
            return True
        return (status == 200) == d.invalid

    def _run(self, i: int) -> None:
        rnd = random.Random(self.seed * 1000 + i)
        conn: http.client.HTTPConnection | None = None
        ts, du, de, stt = self.ts[i], self.dur[i], self.desc[i], self.status[i]
        descs = self.tokens.descs
        while not self.stop.is_set():
            tok, did = self.tokens.pick(rnd)
            headers = {"Authorization": f"Bearer {tok}"} if tok is not None else {}
            t0 = time.monotonic()
            body, hdrs = b"", []
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=REQUEST_TIMEOUT)
                conn.request("GET", PATH, headers=headers)
                r = conn.getresponse()
                body = r.read()
                status = r.status
                hdrs = r.getheaders()
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                status = NO_ANSWER
                body = repr(e).encode()
                with self.lock:
                    self.errors[type(e).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
            t1 = time.monotonic()
            if status == 503 and body.startswith(b"Jwks is not available"):
                status = FAILCLOSED
            n = len(ts)
            ts.append(t0)
            du.append(t1 - t0)
            de.append(did)
            stt.append(status)
            if self._suspicious(descs[did], status):
                with self.lock:
                    self.sample_counts[status] += 1
                    if self.sample_counts[status] <= SAMPLE_LIMIT:
                        self.samples[(i, n)] = {
                            "body": body[:200].decode("utf-8", "replace"),
                            "headers": {k.lower(): v for k, v in hdrs
                                        if k.lower() in ("www-authenticate", "retry-after", "server",
                                                         "content-type")}}
        if conn is not None:
            conn.close()


# -- wrk side load ---------------------------------------------------------------

WRK_LUA = r"""
-- wrk ... -s soak.lua URL -- PATH TOKEN_FILE
-- Cycles through the valid tokens of TOKEN_FILE, re-read once a second (the soak
-- rewrites it when the signing key changes). Counts statuses, and non-200 per second.
local threads = {}
function setup(thread) table.insert(threads, thread) end
statuses = {}
bad = {}
local path, file = "/", nil
local reqs, idx, loaded = {}, 0, -1
local function load()
  local f = io.open(file, "r")
  if not f then return end
  local r = {}
  for line in f:lines() do
    if #line > 0 then r[#r + 1] = wrk.format("GET", path, {["Authorization"] = "Bearer " .. line}) end
  end
  f:close()
  if #r > 0 then reqs = r end
end
function init(args)
  path, file = args[1], args[2]
  load()
  loaded = os.time()
  idx = math.random(#reqs)
end
function request()
  local now = os.time()
  if now ~= loaded then load(); loaded = now end
  idx = idx + 1
  if idx > #reqs then idx = 1 end
  return reqs[idx]
end
function response(status, headers, body)
  local k = tostring(status)
  if status == 503 and body ~= nil and body:sub(1, 21) == "Jwks is not available" then k = "503fc" end
  statuses[k] = (statuses[k] or 0) + 1
  if status ~= 200 then
    local b = k .. "@" .. os.time()
    bad[b] = (bad[b] or 0) + 1
  end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do io.write("WRKSTATUS " .. k .. " " .. v .. "\n") end
    for k, v in pairs(t:get("bad")) do io.write("WRKBAD " .. k .. " " .. v .. "\n") end
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"status_errors":%d,"lat_p50_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.errors.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


class Wrk:
    def __init__(self, binary: str, workdir: Path, port: int, connections: int, max_s: int) -> None:
        self.lua = workdir / "soak.lua"
        self.lua.write_text(WRK_LUA)
        self.token_file = workdir / "wrk-tokens.txt"
        self.out = workdir / "wrk.out"
        self.cmd = [binary, "-t1", f"-c{connections}", f"-d{max_s}s", "--timeout", f"{int(REQUEST_TIMEOUT)}s",
                    "-s", str(self.lua), f"http://{LOOPBACK}:{port}{PATH}", "--", PATH, str(self.token_file)]
        self.proc: subprocess.Popen | None = None
        self.wall0 = 0.0

    def start(self) -> None:
        self.wall0 = time.time()
        self._fh = open(self.out, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self._fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> dict:
        if self.proc is None:
            return {}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._fh.close()
        text = self.out.read_text(errors="replace")
        res: dict = {"statuses": collections.Counter(), "bad": [], "summary": {}, "rc": self.proc.returncode}
        for ln in text.splitlines():
            if ln.startswith("WRKSTATUS "):
                _, st, n = ln.split()
                res["statuses"][st] += int(n)
            elif ln.startswith("WRKBAD "):
                _, key, n = ln.split()
                st, sec = key.split("@")
                res["bad"].append((st, int(sec), int(n)))
            elif ln.startswith("WRKJSON "):
                res["summary"] = json.loads(ln[len("WRKJSON "):])
        if not res["summary"]:
            res["error"] = text[-2000:]
        return res


# -- Envoy -----------------------------------------------------------------------


def filter_config(jwks_uri: str, max_stale_s: int) -> dict:
    return {
        "providers": {
            "soak": {
                "issuer": ISS,
                "audiences": [AUD],
                "remote_jwks": {
                    "http_uri": {"uri": jwks_uri, "cluster": "jwks", "timeout": "2s"},
                    "cache_duration": f"{TTL_S:g}s",
                    "min_cache_duration": f"{TTL_S:g}s",
                    "refetch_cooldown": "1s",
                    "max_stale": f"{max_stale_s}s",
                    "retry_policy": {"retry_back_off": {"base_interval": "0.25s", "max_interval": "1s"}},
                },
                "clock_skew_seconds": SKEW_S,
            }
        },
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "soak"}}],
    }


def no_access_log(boot: dict) -> None:
    for ls in boot["static_resources"]["listeners"]:
        for fc in ls["filter_chains"]:
            for f in fc["filters"]:
                f["typed_config"].pop("access_log", None)


class ProcSampler(threading.Thread):
    """Envoy RSS and CPU every few seconds (a soak should also show no growth)."""

    def __init__(self, pid: int, every: float = 5.0) -> None:
        super().__init__(name="procsample", daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float, float]] = []  # (t, rss MiB, cpu s)
        self.stop = threading.Event()

    def sample(self) -> None:
        try:
            rss = 0.0
            for ln in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if ln.startswith("VmRSS:"):
                    rss = int(ln.split()[1]) / 1024
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            self.samples.append((time.monotonic(), rss, cpu))
        except (OSError, ValueError, IndexError):
            pass

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.every)


# -- analysis --------------------------------------------------------------------


class Judge:
    def __init__(self, tokens: Tokens, jwks: Jwks, max_stale_s: float, wall_offset: float) -> None:
        self.tokens, self.jwks = tokens, jwks
        self.max_stale = max_stale_s
        self.wall_offset = wall_offset  # wall = monotonic + offset
        self.fetches = jwks.good_fetches()
        self.fetch_times = [t for t, _ in self.fetches]
        self.possible = jwks.possible_fetches()
        limit = TTL_S + max_stale_s
        ends = set()
        for ft in (self.fetch_times, self.possible):
            ends.update(b for a, b in zip(ft, ft[1:]) if b - a > limit - 2.0)
        self.window_ends = sorted(ends)
        self.live_from: dict[int, float | None] = {}
        self.retire_fetch: dict[int, float | None] = {}  # first good fetch without the key
        self.retire_any: dict[int, float | None] = {}    # first fetch that may have been one
        for k in range(len(tokens.keys)):
            first_pub = next((t for t, v in jwks.versions if k in v), None)
            live = None
            if first_pub is not None:
                live = next((t for t, v in self.fetches if t > first_pub + EDGE and k in v), None)
            self.live_from[k] = None if live is None else live + PROPAGATION
            ret_set = None
            if first_pub is not None:
                ret_set = next((t for t, v in jwks.versions if t > first_pub and k not in v), None)
            ret = ret_any = None
            if ret_set is not None:
                ret = next((t for t, v in self.fetches if t > ret_set + EDGE and k not in v), None)
                ret_any = next((t for t in self.possible if t >= ret_set - EDGE), None)
            self.retire_fetch[k] = ret
            self.retire_any[k] = ret_any

    def key_state(self, k: int, ts: float, tr: float) -> str:
        live = self.live_from.get(k)
        ret, ret_any = self.retire_fetch.get(k), self.retire_any.get(k)
        if ret is not None and ts >= ret + PROPAGATION:
            return INVALID
        if live is None or ts < live:
            return INDET
        if ret_any is None or tr < ret_any:
            return VALID
        return INDET

    def exp_state(self, exp: float, ts: float, tr: float) -> str:
        ws, wr = ts + self.wall_offset, tr + self.wall_offset
        if wr < exp + SKEW_S - 0.5:
            return VALID
        if ws > exp + SKEW_S + 1.5:
            return INVALID
        return INDET

    def policy_state(self, ts: float, tr: float | None = None) -> str | None:
        """"closed" when the filter must fail closed (the last good fetch is older than
        TTL + max_stale + 2 s), "near" within 2 s of that line or while a good fetch that
        ended such a window propagates to every VM (fail-closed allowed, not demanded),
        else None (fail-closed not allowed)."""
        tr = ts if tr is None else tr
        limit = TTL_S + self.max_stale
        # Demanded: even the last fetch that may have been good is too old, and no fetch that
        # may have been good came before the answer.
        pf = self.possible
        j = bisect.bisect_right(pf, ts) - 1
        nxt = pf[j + 1] if j + 1 < len(pf) else math.inf
        if j >= 0 and ts > pf[j] + limit + 2.0 and tr < nxt:
            return "closed"
        ft = self.fetch_times
        i = bisect.bisect_right(ft, ts) - 1
        if i < 0:
            return None  # load starts after the first fetch settled
        if ts > ft[i] + limit - 2.0:
            return "near"  # near the line, or answered after the fetch that ended it
        k = bisect.bisect_right(self.window_ends, ts) - 1
        if k >= 0 and ts < self.window_ends[k] + PROPAGATION:
            return "near"  # the fetch that ended a fail-closed window is still propagating
        return None

    def truth(self, d: Desc, ts: float, tr: float) -> tuple[str, str | None]:
        """(class for the tables, policy state): the class is POLICY when fail-closed is
        demanded, else the token's own truth."""
        p = self.policy_state(ts, tr)
        if p == "closed":
            return POLICY, p
        return self.token_truth(d, ts, tr), p

    def token_truth(self, d: Desc, ts: float, tr: float) -> str:
        if d.invalid:
            return INVALID
        states = []
        if d.key >= 0:
            states.append(self.key_state(d.key, ts, tr))
        if d.exp is not None:
            states.append(self.exp_state(d.exp, ts, tr))
        if INVALID in states:
            return INVALID
        if all(s == VALID for s in states):
            return VALID
        return INDET


def status_label(s: int) -> str:
    if s == FAILCLOSED:
        return "503 fail-closed"
    if s == NO_ANSWER:
        return "no answer"
    return str(s)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]


def analyse(loader: Loader, judge: Judge, phases: list[PhaseRec], t_load0: float, t_load1: float) -> dict:
    descs = judge.tokens.descs
    keys = judge.tokens.keys
    phase_starts = [p.start for p in phases]
    by_truth: dict[str, collections.Counter] = {t: collections.Counter() for t in TRUTHS}
    by_kind: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    lat_kind: dict[str, list[float]] = collections.defaultdict(list)
    by_phase: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    violations: list[dict] = []
    vcount: collections.Counter = collections.Counter()
    total = failclosed_allowed = 0
    paused_lat: dict[int, list[float]] = collections.defaultdict(list)
    vgroups: dict[tuple[str, int], dict] = {}
    for th in range(loader.n):
        ts, du, de, st = loader.ts[th], loader.dur[th], loader.desc[th], loader.status[th]
        for n in range(len(ts)):
            t0, d, s = ts[n], descs[de[n]], st[n]
            t1 = t0 + du[n]
            total += 1
            truth, policy = judge.truth(d, t0, t1)
            by_truth[truth][s] += 1
            by_kind[(d.kind, truth)][s] += 1
            lat_kind[d.kind].append(du[n])
            pi = bisect.bisect_right(phase_starts, t0) - 1
            if d.kind in PAUSING_KINDS:
                paused_lat[pi].append(du[n])
            pc = by_phase[pi]
            pc["requests"] += 1
            pc[f"{truth}:{status_label(s)}"] += 1
            rule = None
            if s == NO_ANSWER:
                rule = "no answer"
            elif s >= 500 and s != FAILCLOSED:
                rule = "5xx other than fail-closed"
            elif s == FAILCLOSED:
                if policy is None:
                    rule = "fail-closed 503 not demanded by policy"
                else:
                    failclosed_allowed += 1
            elif policy == "closed":
                if 200 <= s < 300:
                    rule = "accepted past max_stale (fail-open)"
            elif truth == VALID and s != 200:
                rule = "valid token refused"
            elif truth == INVALID and 200 <= s < 300:
                rule = "invalid token accepted"
            if rule:
                vcount[rule] += 1
                key = (rule, pi)
                g = vgroups.get(key)
                rel = t0 - t_load0
                if g is None:
                    vgroups[key] = {"rule": rule, "phase": phases[pi].name if pi >= 0 else "(before schedule)",
                                    "count": 1, "first_t": rel, "last_t": rel, "statuses": collections.Counter(),
                                    "kinds": collections.Counter()}
                    g = vgroups[key]
                else:
                    g["count"] += 1
                    g["last_t"] = max(g["last_t"], rel)
                    g["first_t"] = min(g["first_t"], rel)
                g["statuses"][status_label(s)] += 1
                g["kinds"][d.kind] += 1
                if len(violations) < 60:
                    smp = loader.samples.get((th, n), {})
                    violations.append({
                        "t": round(t0 - t_load0, 3), "latency_ms": round(du[n] * 1000, 1),
                        "phase": phases[pi].name if pi >= 0 else "(before schedule)",
                        "jwks_mode": judge.jwks.mode_at(t0), "rule": rule, "kind": d.kind,
                        "kid": keys[d.key].kid if d.key >= 0 else None, "truth": truth,
                        "status": status_label(s), "body": smp.get("body"), "headers": smp.get("headers")})
    elapsed = max(1e-9, t_load1 - t_load0)
    early = early_next_table(loader, judge)
    kinds = []
    for (kind, truth), c in sorted(by_kind.items()):
        kinds.append({"kind": kind, "truth": truth, "requests": sum(c.values()),
                      "statuses": {status_label(k): v for k, v in sorted(c.items())}})
    lat = {k: {"p50_ms": pct(v, 50) * 1000, "p99_ms": pct(v, 99) * 1000, "max_ms": max(v) * 1000,
               "requests": len(v)} for k, v in sorted(lat_kind.items())}
    phase_rows = []
    for i, p in enumerate(phases):
        c = by_phase.get(i, collections.Counter())
        dur = max(1e-9, (p.end or t_load1) - p.start)

        def cnt(pred) -> int:
            return sum(v for k, v in c.items() if k != "requests" and pred(*k.split(":", 1)))

        phase_rows.append({
            "phase": p.name, "start_s": round(p.start - t_load0, 2), "seconds": round(dur, 2),
            "jwks_mode": p.jwks_mode, "published": p.published, "signing": p.signing, "note": p.note,
            "requests": c["requests"], "req_per_s": round(c["requests"] / dur, 1),
            "valid_200": cnt(lambda t, s: t == VALID and s == "200"),
            "valid_refused": cnt(lambda t, s: t == VALID and s != "200"),
            "invalid_401": cnt(lambda t, s: t == INVALID and s == "401"),
            "invalid_2xx": cnt(lambda t, s: t in (INVALID, POLICY) and s.isdigit() and 200 <= int(s) < 300),
            "indeterminate": cnt(lambda t, s: t == INDET),
            "failclosed_503": cnt(lambda t, s: s == "503 fail-closed"),
            "other_5xx": cnt(lambda t, s: s.isdigit() and int(s) >= 500),
            "no_answer": cnt(lambda t, s: s == "no answer"),
        })
    return {
        "total": total, "elapsed_s": elapsed, "rps": total / elapsed,
        "by_truth": {t: {status_label(k): v for k, v in sorted(c.items())} for t, c in by_truth.items()},
        "kinds": kinds, "latency": lat, "phases": phase_rows,
        "violations": violations, "violation_counts": dict(vcount), "early_next": early,
        "failclosed_allowed": failclosed_allowed,
        "unknown_kid_waits": [
            {"phase": phases[i].name, "jwks_mode": phases[i].jwks_mode, "requests": len(v),
             "p50_ms": pct(v, 50) * 1000, "p99_ms": pct(v, 99) * 1000, "max_ms": max(v) * 1000,
             "held_4s": sum(1 for x in v if x >= 4.0)}
            for i, v in sorted(paused_lat.items()) if i >= 0 and v],
        "violation_groups": sorted(({**g, "first_t": round(g["first_t"], 3), "last_t": round(g["last_t"], 3),
                                     "statuses": dict(g["statuses"]), "kinds": dict(g["kinds"])}
                                    for g in vgroups.values()), key=lambda g: g["first_t"]),
        "client_errors": dict(loader.errors),
    }


EARLY_BUCKETS = (("before the first fetch of the new set", -1e9, 0.0), ("0–1 s after it", 0.0, 1.0),
                 ("1–2 s after it", 1.0, 2.0), ("2 s or more after it", 2.0, 1e9))


def early_next_table(loader: Loader, judge: Judge) -> list[dict]:
    """Next-key tokens sent right after a publish (not judged): their statuses by the time
    since the first good fetch of a set holding the key. A 401 after that fetch means a worker
    refused a key that shared data already had."""
    descs = judge.tokens.descs
    first_fetch: dict[int, float | None] = {}
    for k, live in judge.live_from.items():
        first_fetch[k] = None if live is None else live - PROPAGATION
    rows: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for th in range(loader.n):
        ts, de, st = loader.ts[th], loader.desc[th], loader.status[th]
        for n in range(len(ts)):
            d = descs[de[n]]
            if d.kind != "early_next":
                continue
            f = first_fetch.get(d.key)
            rel = float("inf") if f is None else ts[n] - f
            label = next(lb for lb, lo, hi in EARLY_BUCKETS if lo <= rel < hi) if f is not None else "never fetched"
            rows[(judge.tokens.keys[d.key].kid, label)][status_label(st[n])] += 1
    order = {lb: i for i, (lb, _, _) in enumerate(EARLY_BUCKETS)}
    return [{"kid": kid, "window": lb, "statuses": dict(sorted(c.items()))}
            for (kid, lb), c in sorted(rows.items(), key=lambda x: (x[0][0], order.get(x[0][1], 99)))]


def truth_row(c: dict[str, int]) -> dict[str, int]:
    row = {"requests": sum(c.values()), "200": c.get("200", 0), "401": c.get("401", 0),
           "503 fail-closed": c.get("503 fail-closed", 0), "no answer": c.get("no answer", 0)}
    row["other 5xx"] = sum(v for k, v in c.items() if k.isdigit() and int(k) >= 500)
    row["other"] = row["requests"] - sum(row[k] for k in ("200", "401", "503 fail-closed", "no answer", "other 5xx"))
    return row


LOG_LINE = re.compile(r"^\[[^\]]+\]\[\d+\]\[(\w+)\]\[([\w.]+)\] \[[^\]]+\] (.*)$")


def envoy_log_digest(text: str) -> dict:
    """Warnings and errors (grouped with numbers masked) and counts of edge-jwt lines."""
    groups: collections.Counter = collections.Counter()
    first: dict[str, str] = {}
    edge: collections.Counter = collections.Counter()
    for ln in text.splitlines():
        m = LOG_LINE.match(ln)
        if not m:
            continue
        level, msg = m.group(1), m.group(3)
        if "edge-jwt:" in msg:
            tmpl = re.sub(r"\b\d+(\.\d+)?\b", "N", msg.split("edge-jwt:", 1)[1].strip())
            tmpl = re.sub(r'"soak-[^"]*"|soak-\d+-[0-9a-f]+', "KID", tmpl)
            edge[f"[{level}] {tmpl[:160]}"] += 1
        if level in ("warning", "error", "critical"):
            key = re.sub(r"\b\d+\b", "N", msg)[:200]
            groups[f"[{level}] {key}"] += 1
            first.setdefault(f"[{level}] {key}", ln[:400])
    return {"warn_error": [{"count": n, "line": first[k]} for k, n in groups.most_common(40)],
            "edge_jwt_lines": [{"count": n, "line": k} for k, n in edge.most_common(40)]}


# -- report ----------------------------------------------------------------------


def fmt(n) -> str:
    if isinstance(n, float):
        if math.isnan(n):
            return "–"
        return f"{n:,.1f}"
    return f"{n:,}"


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def render(res: dict) -> str:
    a, meta = res["analysis"], res["meta"]
    L = [f"# edge-jwt soak under faults — {res['verdict']}", ""]
    L.append(f"{meta['started']} · planned {meta['duration_planned_s']} s, load ran {a['elapsed_s']:.1f} s · "
             f"{meta['cycles']} fault cycle(s) · Envoy --concurrency {meta['concurrency']} · "
             f"{meta['threads']} Python load threads · wrk {meta['wrk_connections']} connection(s) · "
             f"invalid share {meta['invalid_share']:.0%} · seed {meta['seed']}")
    L.append("")
    L.append(f"Filter: `{meta['wasm']}` ({meta['wasm_bytes']:,} bytes, sha256 {meta['wasm_sha256'][:16]}…); "
             f"Envoy `{meta['envoy_bin']}`; work dir `{meta['workdir']}`.")
    L.append("")
    L.append("## Rules")
    L.append("")
    L.append(md_table(["rule", "count", "verdict"], [[r["rule"], fmt(r["count"]) if isinstance(r["count"], int)
                                                       else r["count"], r["verdict"]] for r in res["rules"]]))
    L.append("")
    L.append("## Counts")
    L.append("")
    L.append("Python load generator, every request judged by the truth rules of scripts/soak.py "
             "(valid/invalid at send time; indeterminate = key change not yet fetched everywhere, "
             "or an exp within a second of the line; policy = past max_stale).")
    L.append("")
    hdr = ["truth", "requests", "200", "401", "503 fail-closed", "other 5xx", "other", "no answer"]
    rows = []
    for t in TRUTHS:
        r = truth_row(a["by_truth"][t])
        rows.append([t] + [fmt(r[h]) for h in hdr[1:]])
    L.append(md_table(hdr, rows))
    L.append("")
    L.append(f"Total **{a['total']:,}** requests in {a['elapsed_s']:.1f} s = **{a['rps']:,.0f} req/s** "
             f"(Python generator){res['wrk_line']}.")
    L.append("")
    L.append("Per token kind (statuses; latency over all requests of the kind):")
    L.append("")
    krow = []
    for k in a["kinds"]:
        lat = a["latency"].get(k["kind"], {})
        krow.append([k["kind"], k["truth"], fmt(k["requests"]),
                     ", ".join(f"{s}: {n:,}" for s, n in k["statuses"].items()),
                     fmt(lat.get("p50_ms", float("nan"))), fmt(lat.get("p99_ms", float("nan"))),
                     fmt(lat.get("max_ms", float("nan")))])
    L.append(md_table(["kind", "truth", "requests", "statuses", "p50 ms", "p99 ms", "max ms"], krow))
    L.append("")
    if a.get("early_next"):
        L.append("Next-key tokens sent right after a publish (`early_next`, not judged: the key is not yet "
                 "fetched everywhere), by time since the first good fetch of a set holding the key:")
        L.append("")
        L.append(md_table(["key", "sent", "statuses"],
                          [[e["kid"], e["window"], ", ".join(f"{k}: {v:,}" for k, v in e["statuses"].items())]
                           for e in a["early_next"]]))
        L.append("")
    L.append("## Phases")
    L.append("")
    prow = [[p["phase"], f"{p['start_s']:.1f}", f"{p['seconds']:.1f}", p["jwks_mode"], fmt(p["requests"]),
             fmt(p["req_per_s"]), fmt(p["valid_200"]), fmt(p["valid_refused"]), fmt(p["invalid_401"]),
             fmt(p["invalid_2xx"]), fmt(p["indeterminate"]), fmt(p["failclosed_503"]), fmt(p["other_5xx"]),
             fmt(p["no_answer"]), p["note"]] for p in a["phases"]]
    L.append(md_table(["phase", "start s", "s", "JWKS server", "requests", "req/s", "valid→200",
                       "valid→refused", "invalid→401", "invalid→2xx", "indeterminate", "503 fail-closed",
                       "other 5xx", "no answer", "note"], prow))
    L.append("")
    waits = a.get("unknown_kid_waits") or []
    if waits:
        L.append("Unknown-kid tokens (`unknown_kid`, `retired_key`: the filter may hold them for a forced "
                 "refetch, at most initial_fetch_wait = 5 s) per phase — answer time:")
        L.append("")
        L.append(md_table(["phase", "JWKS server", "requests", "p50 ms", "p99 ms", "max ms", "held ≥ 4 s"],
                          [[w["phase"], w["jwks_mode"], fmt(w["requests"]), fmt(w["p50_ms"]), fmt(w["p99_ms"]),
                            fmt(w["max_ms"]), fmt(w["held_4s"])] for w in waits]))
        L.append("")
    L.append("Keys (published / signing per phase):")
    L.append("")
    L.append(md_table(["phase", "published", "signing"],
                      [[p["phase"], p["published"], p["signing"]] for p in a["phases"]]))
    L.append("")
    L.append("Key-change settle times (change → fetched everywhere) and recoveries (fault end → first "
             "good fetch):")
    L.append("")
    L.append(md_table(["step", "seconds"], [[s["step"], s["seconds"] if s["seconds"] is not None else "never"]
                                            for s in res["settles"] + res["recoveries"]]))
    L.append("")
    j = res["jwks_server"]
    L.append("## JWKS server")
    L.append("")
    L.append(f"{j['fetches']:,} fetches received (connections refused while down are not counted), "
             f"{j['good_fetches']:,} of them good; longest gap between good fetches outside fault windows "
             f"{j['max_ok_gap_s']:.2f} s, longest without any good fetch {j['max_gap_s']:.2f} s "
             f"(max_stale {meta['max_stale_s']} s).")
    L.append("")
    L.append(md_table(["mode", "fetches"], [[m, fmt(n)] for m, n in j["by_mode"].items()]))
    L.append("")
    L.append("## Envoy stats")
    L.append("")
    L.append(md_table(["stat", "value"], [[k, fmt(v)] for k, v in res["envoy_stats"].items()]))
    L.append("")
    pr = res["envoy_proc"]
    if pr:
        L.append(f"Envoy RSS {pr['rss_start_mib']:.1f} MiB at load start, {pr['rss_end_mib']:.1f} MiB at the end "
                 f"(max {pr['rss_max_mib']:.1f}); CPU {pr['cpu_s']:.1f} s over the load "
                 f"({pr['cpu_us_per_req']:.0f} µs per request, wrk included).")
        L.append("")
    L.append("## Envoy log")
    L.append("")
    d = res["envoy_log"]
    L.append("edge-jwt lines (numbers masked):")
    L.append("")
    L.append(md_table(["count", "line"], [[n["count"], f"`{n['line']}`"] for n in d["edge_jwt_lines"]]) if
             d["edge_jwt_lines"] else "(none)")
    L.append("")
    L.append("Warnings and errors (grouped, first occurrence):")
    L.append("")
    L.append(md_table(["count", "first line"], [[n["count"], f"`{n['line']}`"] for n in d["warn_error"]]) if
             d["warn_error"] else "(none)")
    L.append("")
    if a["violations"] or res["findings"] or res.get("wrk_bad"):
        L.append("## Evidence")
        L.append("")
        for f in res["findings"]:
            L.append(f"- {f}")
        if a["violation_groups"]:
            L.append("")
            L.append("Broken-rule requests by rule and phase (t = s since load start):")
            L.append("")
            L.append(md_table(["rule", "phase", "count", "first t", "last t", "statuses", "token kinds"],
                              [[g["rule"], g["phase"], fmt(g["count"]), g["first_t"], g["last_t"],
                                ", ".join(f"{k}: {v:,}" for k, v in g["statuses"].items()),
                                ", ".join(f"{k}: {v:,}" for k, v in sorted(g["kinds"].items()))]
                               for g in a["violation_groups"]]))
        if a["violations"]:
            L.append("")
            L.append(f"First {len(a['violations'])} broken-rule requests (t = s since load start):")
            L.append("")
            L.append(md_table(["t", "ms", "phase", "JWKS server", "rule", "kind", "kid", "status", "body / headers"],
                              [[v["t"], v["latency_ms"], v["phase"], v["jwks_mode"], v["rule"], v["kind"],
                                v["kid"] or "", v["status"],
                                f"`{(v['body'] or '')[:80]}` {json.dumps(v['headers']) if v['headers'] else ''}"]
                               for v in a["violations"]]))
        if res.get("wrk_bad"):
            L.append("")
            L.append("wrk non-200 answers per second:")
            L.append("")
            L.append(md_table(["t", "phase", "status", "count", "verdict"], res["wrk_bad"]))
        L.append("")
    L.append("## Configuration")
    L.append("")
    L.append("```json")
    L.append(json.dumps(meta["filter_config"], indent=2))
    L.append("```")
    L.append("")
    L.append("Truth rules, rules and schedule: see the docstring of scripts/soak.py.")
    L.append("")
    return "\n".join(L)


# -- main ------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description="edge-jwt soak test under faults (issue 5)",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300; 20 for CI)")
    ap.add_argument("--threads", type=int, default=16, help="Python load threads (default 16)")
    ap.add_argument("--invalid-share", type=float, default=0.15, help="share of invalid tokens (default 0.15)")
    ap.add_argument("--wrk-connections", type=int, default=2,
                    help="wrk side load with valid tokens, connections (default 2; 0: no wrk)")
    ap.add_argument("--max-stale", type=int, default=60, help="max_stale in s (default 60)")
    ap.add_argument("--fault-window-max", type=float, default=None,
                    help="cap on outage+garbage per cycle in s (default 0.6 x max_stale)")
    ap.add_argument("--full-faults", choices=("auto", "yes", "no"), default="auto",
                    help="all garbage modes (+ not_json, hang) and a slow phase; auto: for --duration >= 60")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "soak", help="results directory")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if args.duration < 10 or args.duration > 3600:
        ap.error("--duration must be between 10 and 3600 s")
    if not 0 <= args.invalid_share < 1 or args.threads < 1:
        ap.error("bad --invalid-share or --threads")
    fault_cap = args.fault_window_max if args.fault_window_max is not None else 0.6 * args.max_stale
    full = args.full_faults == "yes" or (args.full_faults == "auto" and args.duration >= 60)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    try:
        return run(args, fault_cap, full, seed)
    except SetupError as e:
        log(f"setup failed: {e}")
        return 2


def run(args, fault_cap: float, full: bool, seed: int) -> int:
    envoy_bin = Path(os.environ.get("ENVOY_BIN") or ROOT / ".tools" / "bin" / "envoy")
    wasm = Path(os.environ.get("EDGE_JWT_WASM") or ROOT / "target" / "edge_jwt.wasm")
    for p, what in ((envoy_bin, "Envoy (ENVOY_BIN)"), (wasm, "filter wasm (EDGE_JWT_WASM)")):
        if not p.is_file():
            raise SetupError(f"{what} not found at {p}")
    wrk_bin = shutil.which(os.environ.get("WRK") or "wrk") if args.wrk_connections > 0 else None
    if args.wrk_connections > 0 and not wrk_bin:
        raise SetupError("wrk not found (install it, set WRK, or pass --wrk-connections 0)")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out: Path = args.out.resolve()
    workdir = out / stamp
    workdir.mkdir(parents=True, exist_ok=False)
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")

    steps, cycles = build_plan(args.duration, full)
    tokens = Tokens(args.invalid_share)
    tokens.deadline_wall = time.time() + args.duration + 120
    k0 = tokens.new_key()
    tokens.signing = ((k0.idx, 1.0),)
    jwks = Jwks(tokens.keys)
    jwks.publish([k0.idx])
    cfg = filter_config(jwks.server.uri, args.max_stale)
    envoy = Envoy(cfg, direct_response=(200, "soak ok"), wasm=wasm, envoy_bin=envoy_bin, plugin_name=PLUGIN,
                  clusters={"jwks": jwks.server.port}, concurrency=2, log_level="info",
                  workdir=workdir / "envoy", bootstrap_hook=no_access_log)
    loader = wrk = sampler = sched = None
    wrk_res: dict = {}
    try:
        log(f"starting Envoy (work dir {workdir})")
        try:
            envoy.start()
        except EnvoyStartError as e:
            raise SetupError(str(e)) from None
        # First fetch, seen everywhere, before any load (so no cold-start request is judged).
        t_start = time.monotonic()
        r = envoy.wait_status("/soak", tokens.pools[("valid", 0)][0][0], 200, timeout=15)
        if r.status != 200:
            raise SetupError(f"a valid token never passed after start: {r.status} {r.body[:200]!r}")
        if jwks.settled(0.0, lambda v: k0.idx in v) is None:
            raise SetupError("no good JWKS fetch after start")
        while time.monotonic() < jwks.settled(0.0, lambda v: k0.idx in v):
            time.sleep(0.05)
        log(f"keys loaded {time.monotonic() - t_start:.1f} s after start; load for ~{args.duration:.0f} s, "
            f"{cycles} cycle(s), {len(steps)} steps")
        wrk_file = None
        if wrk_bin:
            wrk = Wrk(wrk_bin, workdir, envoy.port, args.wrk_connections, int(args.duration * 2 + 120))
            wrk_file = wrk.token_file
        t_load0 = time.monotonic()
        wall_offset = time.time() - time.monotonic()
        sched = Schedule(steps, tokens, jwks, fault_cap, t_load0 + args.duration, wrk_file)
        if wrk is not None:
            sched._write_wrk_tokens(k0)
        sampler = ProcSampler(envoy.proc.pid)
        sampler.sample()
        loader = Loader(envoy.port, tokens, args.threads, seed)
        sched.start()  # first step is plain "normal": no request predates the first phase
        loader.start()
        if wrk is not None:
            wrk.start()
        sampler.start()
        hard_end = t_load0 + args.duration * 2 + 120
        last_note = t_load0
        while sched.is_alive() and time.monotonic() < hard_end:
            sched.join(1.0)
            if time.monotonic() - last_note >= 30:
                last_note = time.monotonic()
                done = sum(len(a) for a in loader.ts)
                log(f"{last_note - t_load0:.0f} s: {done:,} requests, phase {sched.phases[-1].name!r}")
        if sched.is_alive():
            sched.stop.set()
            sched.join(5)
            sched.findings.append("schedule overran its hard bound and was stopped")
        if sched.error is not None:
            raise SetupError(f"schedule failed: {sched.error!r}")
        if wrk is not None:
            wrk_res = wrk.stop()
        loader.join(REQUEST_TIMEOUT + 5)
        t_load1 = time.monotonic()
        sampler.stop.set()
        sampler.sample()
        if sched.phases:
            sched.phases[-1].end = sched.phases[-1].end or t_load1
        time.sleep(0.3)
        stats = envoy.stats("edge_jwt|^cluster\\.jwks\\.(upstream_rq_|upstream_cx_connect_fail|upstream_cx_total)"
                            "|^http\\.ingress_http\\.downstream_rq_[1-5]xx|^http\\.ingress_http\\.downstream_rq_total")
        log_text = envoy.log_text()
    finally:
        if wrk is not None and wrk.proc is not None and wrk.proc.poll() is None:
            wrk.proc.kill()
        if loader is not None:
            loader.stop.set()
        if sched is not None:
            sched.stop.set()
        if sampler is not None:
            sampler.stop.set()
        envoy.stop()
        jwks.server.stop()

    log("judging")
    judge = Judge(tokens, jwks, args.max_stale, wall_offset)
    a = analyse(loader, judge, sched.phases, t_load0, t_load1)

    # JWKS server side
    hits = jwks.server.timestamps
    by_mode = collections.Counter(jwks.mode_at(h) for h in hits if t_load0 - 30 <= h)
    good = judge.fetch_times
    bad_windows = [(p.start, p.end) for p, st in zip(sched.phases, steps) if st.bad]
    gaps_ok, gaps_all = [], []
    pts = [t_load0] + [t for t in good if t_load0 <= t <= t_load1] + [t_load1]
    for x, y in zip(pts, pts[1:]):
        gaps_all.append(y - x)
        if not any(s - 1 < y and x < e + RECOVERY_BOUND for s, e in bad_windows):
            gaps_ok.append(y - x)
    fetch_log = [[round(h - t_load0, 3), jwks.mode_at(h)] for h in hits]
    jwks_info = {"fetches": len(hits), "good_fetches": len(good), "by_mode": dict(by_mode),
                 "log": fetch_log, "good": [round(t - t_load0, 3) for t in good],
                 "max_ok_gap_s": max(gaps_ok, default=0.0), "max_gap_s": max(gaps_all, default=0.0)}

    # wrk
    wrk_line, wrk_bad_rows, wrk_non2xx, wrk_policy, wrk_errors = "", [], 0, 0, 0
    if wrk is not None:
        summ = wrk_res.get("summary", {})
        sts = wrk_res.get("statuses", {})
        wrk_errors = sum(summ.get(k, 0) for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
        if summ:
            secs = summ["duration_us"] / 1e6 or 1
            wrk_line = (f"; wrk side load: {summ['requests']:,} requests = {summ['requests'] / secs:,.0f} req/s, "
                        f"statuses {dict(sts)}, p50 {summ['lat_p50_us'] / 1000:.1f} ms, "
                        f"p99 {summ['lat_p99_us'] / 1000:.1f} ms, socket errors {wrk_errors}")
        else:
            wrk_line = f"; wrk gave no summary (exit {wrk_res.get('rc')})"
            wrk_errors += 1
        starts = [p.start for p in sched.phases]
        # wrk only sends valid tokens; it reports non-200 per wall-clock second. A fail-closed
        # 503 in a second where the policy allowed it counts as policy, anything else breaks.
        for st, sec, n in sorted(wrk_res.get("bad", []), key=lambda x: x[1]):
            t = sec - wall_offset
            pi = bisect.bisect_right(starts, t) - 1
            states = {judge.policy_state(t + f / 8) for f in range(9)}
            allowed = st == "503fc" and bool(states & {"near", "closed"})
            if allowed:
                wrk_policy += n
            else:
                wrk_non2xx += n
            wrk_bad_rows.append([round(t - t_load0, 1), sched.phases[pi].name if pi >= 0 else "",
                                 "503 fail-closed" if st == "503fc" else st, n,
                                 "policy" if allowed else "**BROKEN**"])

    # Envoy process
    proc = {}
    smp = [s for s in sampler.samples] if sampler else []
    if len(smp) >= 2:
        cpu = smp[-1][2] - smp[0][2]
        reqs = a["total"] + (wrk_res.get("summary", {}).get("requests", 0) if wrk else 0)
        proc = {"rss_start_mib": smp[0][1], "rss_end_mib": smp[-1][1], "rss_max_mib": max(s[1] for s in smp),
                "cpu_s": cpu, "cpu_us_per_req": cpu / max(1, reqs) * 1e6,
                "rss_series": [(round(t - t_load0, 1), round(r, 1)) for t, r, _ in smp]}

    vc = a["violation_counts"]
    judged_valid = sum(a["by_truth"][VALID].values())
    judged_invalid = sum(a["by_truth"][INVALID].values())
    rec_ok = sum(1 for r in sched.recoveries if r["seconds"] is not None)
    rules = [
        {"rule": "valid tokens refused (valid → not 200)", "count": vc.get("valid token refused", 0)},
        {"rule": "invalid tokens accepted (invalid → 2xx)", "count": vc.get("invalid token accepted", 0)},
        {"rule": "accepted past max_stale (policy → 2xx)", "count": vc.get("accepted past max_stale (fail-open)", 0)},
        {"rule": "5xx other than the fail-closed answer", "count": vc.get("5xx other than fail-closed", 0)},
        {"rule": "fail-closed 503 where the policy did not demand it",
         "count": vc.get("fail-closed 503 not demanded by policy", 0)},
        {"rule": "requests without an answer (connection error, timeout)", "count": vc.get("no answer", 0)},
    ]
    if wrk is not None:
        rules.append({"rule": "wrk (valid tokens): non-2xx answers outside policy", "count": wrk_non2xx})
        rules.append({"rule": "wrk: socket errors / timeouts", "count": wrk_errors})
    for r in rules:
        r["verdict"] = "ok" if r["count"] == 0 else "**BROKEN**"
    rules.append({"rule": "fail-closed 503 allowed by policy (past max_stale, or within 2 s of it)",
                  "count": a["failclosed_allowed"] + wrk_policy, "verdict": "policy"})
    rules.append({"rule": "JWKS fetched again after every fault window (≤ "
                  f"{RECOVERY_BOUND:.0f} s)", "count": f"{rec_ok}/{len(sched.recoveries)}",
                  "verdict": "ok" if rec_ok == len(sched.recoveries) else "**BROKEN**"})
    settle_ok = sum(1 for s in sched.settles if s["seconds"] is not None)
    rules.append({"rule": f"every key change fetched (≤ {SETTLE_BOUND:.0f} s)",
                  "count": f"{settle_ok}/{len(sched.settles)}",
                  "verdict": "ok" if settle_ok == len(sched.settles) else "**BROKEN**"})
    rules.append({"rule": "run judged something (valid and invalid requests)",
                  "count": f"{judged_valid:,} / {judged_invalid:,}",
                  "verdict": "ok" if judged_valid and judged_invalid else "**BROKEN**"})
    broken = [r for r in rules if r["verdict"] == "**BROKEN**"]
    verdict = "PASS" if not broken and not sched.findings else "FAIL"

    res = {
        "verdict": verdict,
        "meta": {"started": started, "duration_planned_s": args.duration, "cycles": cycles, "concurrency": 2,
                 "threads": args.threads, "wrk_connections": args.wrk_connections if wrk else 0,
                 "invalid_share": args.invalid_share, "seed": seed, "max_stale_s": args.max_stale,
                 "fault_window_max_s": fault_cap, "full_faults": full,
                 "wasm": str(wasm), "wasm_bytes": wasm.stat().st_size,
                 "wasm_sha256": hashlib.sha256(wasm.read_bytes()).hexdigest(),
                 "envoy_bin": str(envoy_bin), "workdir": str(workdir), "filter_config": cfg},
        "rules": rules, "findings": sched.findings, "analysis": a, "jwks_server": jwks_info,
        "settles": sched.settles, "recoveries": sched.recoveries,
        "envoy_stats": dict(sorted(stats.items())), "envoy_proc": proc,
        "envoy_log": envoy_log_digest(log_text), "wrk": {k: v for k, v in wrk_res.items() if k != "bad"},
        "wrk_line": wrk_line, "wrk_bad": wrk_bad_rows,
    }
    md = render(res)
    (out / f"{stamp}.md").write_text(md)
    (out / f"{stamp}.json").write_text(json.dumps(res, indent=2, default=str))
    shutil.copyfile(out / f"{stamp}.md", out / "latest.md")
    shutil.copyfile(out / f"{stamp}.json", out / "latest.json")
    tv = truth_row(a["by_truth"][VALID])
    ti = truth_row(a["by_truth"][INVALID])
    log(f"{verdict}: {a['total']:,} requests ({a['rps']:,.0f} req/s); valid {tv['requests']:,} "
        f"(200: {tv['200']:,}), invalid {ti['requests']:,} (401: {ti['401']:,}, 2xx: "
        f"{vc.get('invalid token accepted', 0)}), JWKS fetches {len(hits):,}{wrk_line}")
    for r in broken:
        log(f"rule broken: {r['rule']}: {r['count']}")
    for f in sched.findings:
        log(f"finding: {f}")
    log(f"report: {out / (stamp + '.md')} (and latest.md)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
