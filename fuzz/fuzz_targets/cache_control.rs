//! The JWKS cache policy: `parse_cache_control`, `ttl_ms` with a Remote
//! built by `Config::from_json` from fuzzed durations, the backoff and
//! lease arithmetic, and the shared-data records `Entry` / `Control`.
//!
//! Oracles:
//! - `parse_cache_control` is compositional: parsing "a,b" equals combining
//!   the parses of "a" and "b" (no_cache: or; max_age: min), and directive
//!   names are case-insensitive;
//! - `ttl_ms` equals `cache_duration` when that is set, else lies within
//!   [min_cache_duration, max_cache_duration] and equals the documented rule
//!   (strictest of cache_max_age, edge_ttl, max-age; no-cache = minimum);
//! - `backoff_ms` never exceeds max_interval; `take_lease`, `after_failure`
//!   and `freshness` do not overflow for a realistic clock (now < 2^45 ms,
//!   about year 3084) and any config the parser accepts (oracle name
//!   `cache_overflow`);
//! - the forced-refetch state machine: a finished fetch ends the lease and
//!   starts the cooldown, no second forced fetch is asked for while one is
//!   wanted, under way or cooling down;
//! - `Entry::decode(encode(e)) == e` and `Control::decode(encode(c)) == c`
//!   for arbitrary records, and decoding is stable: whatever `decode`
//!   accepts re-encodes to something that decodes to the same record.
#![no_main]
use arbitrary::Arbitrary;
use edge_jwt::cache::{self, CacheControl, Control, Due, Entry};
use edge_jwt::config::{Config, Remote};
use edge_jwt::jwks::KeySet;
use edge_jwt_fuzz::allowed;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

/// A duration as the config would spell it.
#[derive(Arbitrary, Debug)]
enum Dur {
    Secs(u32),
    Millis(u64),
    Raw(String),
}

impl Dur {
    fn render(&self) -> String {
        match self {
            Dur::Secs(s) => format!("{s}s"),
            Dur::Millis(ms) => format!("{}.{:03}s", ms / 1000, ms % 1000),
            Dur::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    cache_control: String,
    other_cache_control: String,
    cache_duration: Option<Dur>,
    min_cache_duration: Option<Dur>,
    max_cache_duration: Option<Dur>,
    timeout: Option<Dur>,
    base_interval: Option<Dur>,
    max_interval: Option<Dur>,
    max_stale: Option<Dur>,
    refetch_cooldown: Option<Dur>,
    jwks_cache_max_age: Option<u64>,
    jwks_edge_ttl: Option<u64>,
    now: u64,
    rand: u64,
    failures: u32,
    entry: (u64, u64, u32, Vec<u8>),
    control: (u64, u64, u32, u64, u64, bool, bool),
    raw_record: Vec<u8>,
}

fn remote_from(i: &Input) -> Option<Remote> {
    let mut r = Map::new();
    let mut http_uri = json!({"uri": "http://issuer:9000/.well-known/jwks.json", "cluster": "issuer"});
    if let Some(t) = &i.timeout {
        http_uri["timeout"] = t.render().into();
    }
    r.insert("http_uri".into(), http_uri);
    for (name, d) in [
        ("cache_duration", &i.cache_duration),
        ("min_cache_duration", &i.min_cache_duration),
        ("max_cache_duration", &i.max_cache_duration),
        ("max_stale", &i.max_stale),
        ("refetch_cooldown", &i.refetch_cooldown),
    ] {
        if let Some(d) = d {
            r.insert(name.into(), d.render().into());
        }
    }
    if i.base_interval.is_some() || i.max_interval.is_some() {
        let mut b = Map::new();
        if let Some(d) = &i.base_interval {
            b.insert("base_interval".into(), d.render().into());
        }
        if let Some(d) = &i.max_interval {
            b.insert("max_interval".into(), d.render().into());
        }
        r.insert("retry_policy".into(), json!({ "retry_back_off": Value::Object(b) }));
    }
    let doc = json!({"providers": {"p": {"remote_jwks": Value::Object(r)}}});
    let config = Config::from_json(doc.to_string().as_bytes()).ok()?;
    config.providers.into_iter().next()?.remote
}

fn combine(a: &CacheControl, b: &CacheControl) -> CacheControl {
    CacheControl {
        no_cache: a.no_cache || b.no_cache,
        max_age: match (a.max_age, b.max_age) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
    }
}

fn check_arithmetic(r: &Remote, i: &Input) {
    let now = i.now % (1 << 45);
    let b = cache::backoff_ms(r, i.failures, i.rand);
    assert!(b <= r.backoff_max_ms, "backoff {b} over max {}", r.backoff_max_ms);
    // These add config durations to the clock; they are what the glue calls.
    // With overflow checks on (cargo fuzz's default) an overflow panics inside
    // src/cache.rs, which names the line; known and allowed, it is skipped.
    let timeout = r.sources[0].timeout_ms;
    let fits = now.checked_add(timeout).and_then(|t| t.checked_add(1_000)).is_some()
        && now.checked_add(cache::backoff_ms(r, 1, i.rand)).is_some();
    if !fits && allowed("cache_overflow") {
        return;
    }
    let c = cache::take_lease(&Control::default(), 7, now, timeout, Due::Initial);
    assert!(c.leased(now), "a fresh lease must hold at now");
    let f = cache::after_failure(&c, r, now, i.rand);
    assert!(!f.leased(now) && f.next_attempt_ms >= now && f.failures == 1);
    let e = Entry { fetched_at_ms: now, expires_at_ms: now, source: 0, body: Vec::new() };
    let _ = cache::freshness(&e, r, now);
    let _ = cache::want_forced(&f, r, now);
    assert!(
        fits,
        "now {now} + a config duration overflows u64 (timeout {timeout} ms, backoff {} ms), yet no panic",
        cache::backoff_ms(r, 1, i.rand)
    );
}

/// The lease / forced-refetch state machine from any stored control record.
fn check_lease_states(c: &Control, r: &Remote, now: u64) {
    let s = cache::after_success(c, now);
    assert!(s.lease_until_ms == 0 && s.lease_holder == 0 && s.failures == 0 && s.next_attempt_ms == 0);
    assert!(!s.forced_in_flight, "a finished fetch is no longer in flight");
    let want_last = if c.forced_in_flight { now } else { c.last_forced_ms };
    assert_eq!(s.last_forced_ms, want_last, "cooldown starts when a forced fetch ends");
    assert_eq!(s.forced_wanted, c.forced_wanted);
    if let Some(w) = cache::want_forced(c, r, now) {
        assert!(!c.forced_wanted && !c.forced_in_flight, "second forced refetch asked for");
        assert!(now >= c.last_forced_ms.saturating_add(r.refetch_cooldown_ms), "forced refetch inside the cooldown");
        assert!(w.forced_wanted && w.may_force(r, now));
    }
    let timeout = r.sources[0].timeout_ms;
    if now.checked_add(timeout).and_then(|t| t.checked_add(1_000)).is_some() {
        let t = cache::take_lease(c, 9, now, timeout, Due::Forced);
        assert!(t.leased(now) && t.forced_in_flight && !t.forced_wanted && t.last_forced_ms == now);
        assert!(t.may_force(r, now), "requests may wait for the forced fetch under way");
        assert_eq!(cache::want_forced(&t, r, now), None, "no second forced fetch while one runs");
        let done = cache::after_success(&t, now.saturating_add(1));
        assert!(!done.forced_in_flight && done.last_forced_ms == now.saturating_add(1));
    }
}

fuzz_target!(|i: Input| {
    // Cache-Control parsing.
    let a = cache::parse_cache_control(&i.cache_control);
    let b = cache::parse_cache_control(&i.other_cache_control);
    let ab = cache::parse_cache_control(&format!("{},{}", i.cache_control, i.other_cache_control));
    assert_eq!(ab, combine(&a, &b), "parse(a,b) != parse(a) + parse(b)");
    assert_eq!(cache::parse_cache_control(&i.cache_control.to_ascii_uppercase()), a, "case matters");
    assert_eq!(cache::parse_cache_control(&i.cache_control.to_ascii_lowercase()), a, "case matters");

    // TTL with a Remote the config parser accepted.
    if let Some(r) = remote_from(&i) {
        let set = KeySet { cache_max_age: i.jwks_cache_max_age, edge_ttl: i.jwks_edge_ttl, ..KeySet::default() };
        for cc in [None, Some(i.cache_control.as_str())] {
            let ttl = cache::ttl_ms(&r, &set, cc);
            match r.cache_duration_ms {
                Some(fixed) => assert_eq!(ttl, fixed, "cache_duration must win"),
                None => {
                    assert!(r.min_ttl_ms <= ttl && ttl <= r.max_ttl_ms, "ttl {ttl} outside [{}, {}]", r.min_ttl_ms, r.max_ttl_ms);
                    let parsed = cc.map(cache::parse_cache_control).unwrap_or_default();
                    let hints = [set.cache_max_age, set.edge_ttl, parsed.max_age];
                    let strictest = hints.iter().flatten().min().map(|s| u128::from(*s) * 1000);
                    let raw = if parsed.no_cache { 0 } else { strictest.unwrap_or(600_000) };
                    let want = raw.clamp(u128::from(r.min_ttl_ms), u128::from(r.max_ttl_ms));
                    assert_eq!(u128::from(ttl), want, "ttl differs from the documented rule");
                }
            }
        }
        check_arithmetic(&r, &i);
    }

    // Shared-data records.
    let (f, x, s, body) = &i.entry;
    let e = Entry { fetched_at_ms: *f, expires_at_ms: *x, source: *s, body: body.clone() };
    assert_eq!(Entry::decode(&e.encode()).as_ref(), Some(&e), "Entry round trip");
    let (l, h, n, na, lf, fw, fi) = i.control;
    let c = Control {
        lease_until_ms: l,
        lease_holder: h,
        failures: n,
        next_attempt_ms: na,
        last_forced_ms: lf,
        forced_wanted: fw,
        forced_in_flight: fi,
    };
    assert_eq!(Control::decode(&c.encode()).as_ref(), Some(&c), "Control round trip");
    if let Some(r) = remote_from(&i) {
        check_lease_states(&c, &r, i.now % (1 << 45));
    }
    if let Some(d) = Entry::decode(&i.raw_record) {
        assert_eq!(Entry::decode(&d.encode()).as_ref(), Some(&d), "Entry decode not stable");
    }
    if let Some(d) = Control::decode(&i.raw_record) {
        assert_eq!(Control::decode(&d.encode()).as_ref(), Some(&d), "Control decode not stable");
    }
});
