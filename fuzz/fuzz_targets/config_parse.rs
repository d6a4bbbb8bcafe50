//! `Config::from_json(data)`: no panic, and every accepted config keeps the
//! promises docs/CONFIG.md and the request path rely on.
//!
//! Oracles for an accepted config:
//! - the bytes are exactly one JSON document (oracle name `config_trailing`);
//! - re-serializing the parsed JSON and parsing again gives the same Config;
//! - invariants: providers non-empty with keys, rules name existing
//!   providers, 0 < min_cache_duration <= max_cache_duration, backoff base
//!   <= max, timeouts > 0, body limits and max_token_bytes in range, header
//!   names lower-case HTTP tokens, owned_headers sorted and complete, no
//!   token header is also a header the filter sets;
//! - the cache TTL of every remote stays within [min, max] (or equals
//!   cache_duration) for a few JWKS hints and Cache-Control values;
//! - `take_lease` / `after_failure` with the config's timeouts and backoff
//!   do not overflow at a real clock (oracle name `cache_overflow`).
#![no_main]
use edge_jwt::cache::{self, Control, Due};
use edge_jwt::config::{Config, Remote};
use edge_jwt::extract::Location;
use edge_jwt::jwks::KeySet;
use edge_jwt_fuzz::allowed;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// 2025-10-09 in Unix milliseconds, the clock the glue passes in.
const NOW_MS: u64 = 1_760_000_000_000;

fn is_header_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&c))
}

fn check_remote(r: &Remote, what: &str) {
    assert!(!r.sources.is_empty(), "{what}: no sources");
    for s in &r.sources {
        assert!(s.uri.starts_with("http://") || s.uri.starts_with("https://"), "{what}: uri {:?}", s.uri);
        assert!(!s.authority.is_empty() && !s.authority.contains(['@', ' ', '/']), "{what}: authority {:?}", s.authority);
        assert!(s.path.starts_with('/'), "{what}: path {:?}", s.path);
        assert!(!s.cluster.is_empty(), "{what}: empty cluster");
        assert!(s.timeout_ms > 0, "{what}: zero timeout");
    }
    assert_ne!(r.cache_duration_ms, Some(0), "{what}: zero cache_duration");
    assert!(r.min_ttl_ms > 0 && r.min_ttl_ms <= r.max_ttl_ms, "{what}: min/max ttl {} {}", r.min_ttl_ms, r.max_ttl_ms);
    assert!(r.backoff_base_ms > 0 && r.backoff_base_ms <= r.backoff_max_ms, "{what}: backoff");
    assert!((1024..=4 << 20).contains(&r.max_body_bytes), "{what}: max_body_bytes");
    assert!(matches!(r.keys_unavailable_status, 401 | 503), "{what}: status");

    for (max_age, edge) in [(None, None), (Some(0), None), (Some(u64::MAX), Some(1)), (Some(300), Some(3600))] {
        let set = KeySet { cache_max_age: max_age, edge_ttl: edge, ..KeySet::default() };
        for cc in [None, Some("no-cache"), Some("max-age=18446744073709551615"), Some("max-age=60")] {
            let ttl = cache::ttl_ms(r, &set, cc);
            match r.cache_duration_ms {
                Some(fixed) => assert_eq!(ttl, fixed, "{what}: ttl ignores cache_duration"),
                None => assert!((r.min_ttl_ms..=r.max_ttl_ms).contains(&ttl), "{what}: ttl {ttl} outside [min,max]"),
            }
        }
    }
    for failures in [1, 2, 31, 64, u32::MAX] {
        assert!(cache::backoff_ms(r, failures, u64::MAX) <= r.backoff_max_ms, "{what}: backoff over max");
    }

    // The clock arithmetic the glue does with these durations, at a real
    // "now": with overflow checks on, an overflow panics inside src/cache.rs.
    for s in &r.sources {
        let fits = NOW_MS.checked_add(s.timeout_ms).and_then(|t| t.checked_add(1_000)).is_some();
        if fits || !allowed("cache_overflow") {
            let c = cache::take_lease(&Control::default(), 1, NOW_MS, s.timeout_ms, Due::Initial);
            assert!(fits, "{what}: now + timeout {} ms overflows u64, yet no panic", s.timeout_ms);
            assert!(c.leased(NOW_MS), "{what}: a fresh lease must hold");
        }
    }
    for failures in [0, 1, 30, 100] {
        let ctl = Control { failures, ..Control::default() };
        // rand = half the step gives the largest jittered backoff (the full step).
        let rand = cache::backoff_ms(r, failures.saturating_add(1), 0);
        let backoff = cache::backoff_ms(r, failures.saturating_add(1), rand);
        let fits = NOW_MS.checked_add(backoff).is_some();
        if fits || !allowed("cache_overflow") {
            let f = cache::after_failure(&ctl, r, NOW_MS, rand);
            assert!(fits, "{what}: now + backoff {backoff} ms overflows u64, yet no panic");
            assert!(f.next_attempt_ms >= NOW_MS, "{what}: next attempt before now");
        }
    }
}

fn check(c: &Config) {
    assert!(!c.providers.is_empty(), "no providers");
    assert!((256..=1 << 20).contains(&c.max_token_bytes), "max_token_bytes {}", c.max_token_bytes);
    assert!(!c.realm.contains(['"', '\\']) && !c.realm.chars().any(char::is_control), "realm {:?}", c.realm);
    assert!(c.jwt_cache_size <= 100_000);
    for h in [&c.verdict_header, &c.reason_header] {
        assert!(is_header_token(h), "verdict/reason header {h:?}");
        assert!(c.owned_headers.contains(h), "owned_headers lacks {h:?}");
    }
    let mut sorted = c.owned_headers.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, c.owned_headers, "owned_headers not sorted/unique");
    if let Some(cookie) = &c.session_cookie {
        assert!(!cookie.is_empty() && !cookie.contains([';', '=', ' ']), "session cookie {cookie:?}");
    }
    if let Some(rev) = &c.revocation {
        check_remote(&rev.remote, "revocation");
        assert_eq!(rev.remote.cache_duration_ms, Some(rev.remote.min_ttl_ms), "revocation ttl");
    }
    let mut names: Vec<&str> = c.providers.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), c.providers.len(), "duplicate provider names");
    for p in &c.providers {
        let what = format!("provider {:?}", p.name);
        assert!(!p.name.is_empty(), "empty provider name");
        assert!(p.local_keys.is_some() || p.remote.is_some(), "{what}: no keys");
        if let Some(set) = &p.local_keys {
            assert!(!set.keys.is_empty(), "{what}: empty local key set");
        }
        if let Some(r) = &p.remote {
            check_remote(r, &what);
        }
        assert!(!p.locations.is_empty(), "{what}: no token location");
        for loc in &p.locations {
            if let Location::Header { name, .. } = loc {
                assert!(!name.is_empty() && !name.starts_with(':'), "{what}: header {name:?}");
                assert_eq!(name, &name.to_ascii_lowercase(), "{what}: header not lower-case");
                assert!(!c.owned_headers.contains(name), "{what}: token header {name:?} is also set by the filter");
            }
        }
        assert_ne!(p.claims.issuer.as_deref(), Some(""), "{what}: empty issuer kept");
        assert!(p.claims.audiences.iter().all(|a| !a.is_empty()), "{what}: empty audience");
        assert!(p.claims.clock_skew_seconds >= 0, "{what}: negative skew");
        for ch in &p.claim_to_headers {
            assert!(is_header_token(&ch.header), "{what}: claim header {:?}", ch.header);
            assert!(c.owned_headers.contains(&ch.header), "{what}: claim header not owned");
            assert!(!ch.path.is_empty() && ch.path.iter().all(|s| !s.is_empty()), "{what}: claim path");
        }
        if let Some(h) = &p.forward_payload_header {
            assert!(is_header_token(h) && c.owned_headers.contains(h), "{what}: payload header {h:?}");
        }
    }
    for (i, r) in c.rules.iter().enumerate() {
        if let Some(req) = &r.requires {
            assert!(!req.providers.is_empty(), "rule {i}: requires names no provider");
            assert!(req.providers.iter().all(|&p| p < c.providers.len()), "rule {i}: provider index out of range");
            assert!(!req.allow_failed || req.allow_missing, "rule {i}: allow_failed without allow_missing");
        } else {
            assert!(r.required_scopes.is_empty(), "rule {i}: scopes without requires");
        }
        assert!(r.methods.iter().all(|m| *m == m.to_ascii_uppercase()), "rule {i}: methods not upper-case");
        let _ = r.matches("GET", "/x?y");
    }
}

fuzz_target!(|data: &[u8]| {
    let c = match Config::from_json(data) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    check(&c);

    // The accepted bytes should be one JSON document and nothing else.
    let value: Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => {
            assert!(
                allowed("config_trailing"),
                "Config::from_json accepted bytes that are not a single JSON document: {e}"
            );
            let mut de = serde_json::Deserializer::from_slice(data);
            serde::Deserialize::deserialize(&mut de).expect("accepted config has a JSON prefix")
        }
    };
    // Same meaning after a JSON round trip (escapes, spacing, number forms).
    let again = serde_json::to_vec(&value).expect("re-serialize");
    let c2 = Config::from_json(&again).expect("re-serialized config refused");
    assert_eq!(format!("{c:?}"), format!("{c2:?}"), "config changed after a JSON round trip");
});
