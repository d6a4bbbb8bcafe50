//! JWKS cache policy shared by all worker VMs: the TTL of a fetched set,
//! the shared-data records (entry and control), the single-flight refresh
//! lease, backoff with jitter, and staleness. Pure: the glue supplies the
//! clock and the shared-data reads and CAS writes.
use crate::config::Remote;
use crate::jwks::KeySet;

/// TTL when neither the JWKS nor HTTP says anything (jwt_authn's default).
pub const DEFAULT_TTL_MS: u64 = 600_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub no_cache: bool,
}

/// Parses the directives that matter here; unknown ones are ignored, and a
/// malformed max-age counts as `no-cache` (the cautious reading).
pub fn parse_cache_control(value: &str) -> CacheControl {
    let mut cc = CacheControl::default();
    for d in value.split(',') {
        let d = d.trim();
        let (name, arg) = match d.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (d, None),
        };
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            cc.no_cache = true;
        } else if name.eq_ignore_ascii_case("max-age") {
            match arg.and_then(|a| a.parse::<u64>().ok()) {
                Some(secs) => cc.max_age = Some(cc.max_age.map_or(secs, |m| m.min(secs))),
                None => cc.no_cache = true,
            }
        }
    }
    cc
}

/// How long a freshly fetched set stays fresh: `cache_duration` if set,
/// else the strictest of `cache_max_age`, `edge_ttl` and `max-age`,
/// clamped to [min, max]. `no-cache`/`max-age=0` mean the minimum, never a
/// fetch per request.
pub fn ttl_ms(remote: &Remote, set: &KeySet, cache_control: Option<&str>) -> u64 {
    if let Some(fixed) = remote.cache_duration_ms {
        return fixed;
    }
    let cc = cache_control.map(parse_cache_control).unwrap_or_default();
    let hints = [set.cache_max_age, set.edge_ttl, cc.max_age];
    let strictest = hints.iter().flatten().min().map(|s| s.saturating_mul(1000));
    let ttl = if cc.no_cache { 0 } else { strictest.unwrap_or(DEFAULT_TTL_MS) };
    ttl.clamp(remote.min_ttl_ms, remote.max_ttl_ms)
}

/// Backoff after `failures` consecutive failures: base·2^(n-1), capped,
/// with "equal jitter" (half fixed, half random) so workers and proxies
/// spread out. `rand` is any u64 the caller draws.
pub fn backoff_ms(remote: &Remote, failures: u32, rand: u64) -> u64 {
    let exp = failures.saturating_sub(1).min(30);
    let full = remote.backoff_base_ms.saturating_mul(1u64 << exp).min(remote.backoff_max_ms);
    let half = full / 2;
    half.saturating_add(if half == 0 { 0 } else { rand % half.saturating_add(1) })
}

/// The cached set in shared data: raw JWKS body plus when and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub fetched_at_ms: u64,
    pub expires_at_ms: u64,
    pub source: u32,
    pub body: Vec<u8>,
}

const ENTRY_MAGIC: &str = "EJ1";

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{ENTRY_MAGIC} {} {} {}\n", self.fetched_at_ms, self.expires_at_ms, self.source)
            .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(raw: &[u8]) -> Option<Entry> {
        let nl = raw.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(raw.get(..nl)?).ok()?;
        let mut f = head.split(' ');
        if f.next()? != ENTRY_MAGIC {
            return None;
        }
        let fetched_at_ms = f.next()?.parse().ok()?;
        let expires_at_ms = f.next()?.parse().ok()?;
        let source = f.next()?.parse().ok()?;
        Some(Entry { fetched_at_ms, expires_at_ms, source, body: raw.get(nl + 1..)?.to_vec() })
    }
}

/// Per-source coordination record in shared data, written only by CAS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    /// A fetch is in flight until this time (the lease); 0 when free.
    pub lease_until_ms: u64,
    pub lease_holder: u64,
    pub failures: u32,
    /// No attempt before this time (backoff).
    pub next_attempt_ms: u64,
    /// Last fetch forced by an unknown `kid` (for the cooldown).
    pub last_forced_ms: u64,
    /// Set by any VM that saw an unknown `kid`; the next lease holder
    /// fetches even if the entry is fresh.
    pub forced_wanted: bool,
    /// The fetch under the current lease was forced. The cooldown starts
    /// when it completes, so a slow fetch cannot be followed at once by
    /// another one, and requests parked for it get their answer.
    pub forced_in_flight: bool,
}

impl Control {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "C1 {} {} {} {} {} {} {}",
            self.lease_until_ms,
            self.lease_holder,
            self.failures,
            self.next_attempt_ms,
            self.last_forced_ms,
            u8::from(self.forced_wanted),
            u8::from(self.forced_in_flight)
        )
        .into_bytes()
    }

    pub fn decode(raw: &[u8]) -> Option<Control> {
        let s = std::str::from_utf8(raw).ok()?;
        let mut f = s.split(' ');
        if f.next()? != "C1" {
            return None;
        }
        Some(Control {
            lease_until_ms: f.next()?.parse().ok()?,
            lease_holder: f.next()?.parse().ok()?,
            failures: f.next()?.parse().ok()?,
            next_attempt_ms: f.next()?.parse().ok()?,
            last_forced_ms: f.next()?.parse().ok()?,
            forced_wanted: f.next()? == "1",
            forced_in_flight: f.next()? == "1",
        })
    }

    pub fn leased(&self, now: u64) -> bool {
        self.lease_until_ms > now
    }

    /// Whether a request with an unknown `kid` may wait for a refetch: one
    /// is asked for, under way, or allowed by the cooldown.
    pub fn may_force(&self, remote: &Remote, now: u64) -> bool {
        self.forced_wanted
            || (self.forced_in_flight && self.leased(now))
            || now >= self.last_forced_ms.saturating_add(remote.refetch_cooldown_ms)
    }
}

/// Why a fetch is due, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Initial,
    Expired,
    Forced,
}

/// Whether this source should be fetched now, before taking the lease.
pub fn due(entry_expires_at: Option<u64>, control: &Control, now: u64) -> Option<Due> {
    if control.leased(now) || now < control.next_attempt_ms {
        return None;
    }
    match entry_expires_at {
        None => Some(Due::Initial),
        Some(_) if control.forced_wanted => Some(Due::Forced),
        Some(exp) if now >= exp => Some(Due::Expired),
        Some(_) => None,
    }
}

/// The control record that takes the lease for `holder`.
pub fn take_lease(control: &Control, holder: u64, now: u64, timeout_ms: u64, due: Due) -> Control {
    let mut c = control.clone();
    // The lease outlives the callout timeout, so a dead holder frees it.
    c.lease_until_ms = now.saturating_add(timeout_ms).saturating_add(1_000);
    c.lease_holder = holder;
    if due == Due::Forced {
        c.forced_wanted = false;
        c.forced_in_flight = true;
        c.last_forced_ms = now;
    }
    c
}

/// Ends the lease; a forced fetch starts its cooldown now that it is done.
fn end_lease(control: &Control, now: u64) -> Control {
    let mut c = control.clone();
    c.lease_until_ms = 0;
    c.lease_holder = 0;
    if c.forced_in_flight {
        c.forced_in_flight = false;
        c.last_forced_ms = now;
    }
    c
}

pub fn after_success(control: &Control, now: u64) -> Control {
    Control { failures: 0, next_attempt_ms: 0, ..end_lease(control, now) }
}

pub fn after_failure(control: &Control, remote: &Remote, now: u64, rand: u64) -> Control {
    let failures = control.failures.saturating_add(1);
    Control { failures, next_attempt_ms: now.saturating_add(backoff_ms(remote, failures, rand)), ..end_lease(control, now) }
}

/// A request for a forced refetch (unknown `kid`), if none is asked for or
/// under way and the cooldown allows.
pub fn want_forced(control: &Control, remote: &Remote, now: u64) -> Option<Control> {
    if control.forced_wanted || control.forced_in_flight || now < control.last_forced_ms.saturating_add(remote.refetch_cooldown_ms) {
        return None;
    }
    Some(Control { forced_wanted: true, ..control.clone() })
}

/// Freshness of a cached set at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Past its TTL, still served while refreshes fail.
    Stale,
    /// Past TTL + max_stale: no longer trusted.
    Expired,
}

pub fn freshness(entry: &Entry, remote: &Remote, now: u64) -> Freshness {
    if now < entry.expires_at_ms {
        Freshness::Fresh
    } else if now < entry.expires_at_ms.saturating_add(remote.max_stale_ms) {
        Freshness::Stale
    } else {
        Freshness::Expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn remote(extra: &str) -> Remote {
        let doc = format!(
            r#"{{"providers":{{"p":{{"remote_jwks":{{"http_uri":{{"uri":"http://h/j","cluster":"c","timeout":"2s"}}{extra}}}}}}}}}"#
        );
        let c = Config::from_json(doc.as_bytes()).expect("config");
        c.providers.into_iter().next().and_then(|p| p.remote).expect("remote")
    }

    fn set(max_age: Option<u64>, edge: Option<u64>) -> KeySet {
        KeySet { cache_max_age: max_age, edge_ttl: edge, ..KeySet::default() }
    }

    #[test]
    fn cache_control_parsing() {
        assert_eq!(parse_cache_control("public, max-age=300"), CacheControl { max_age: Some(300), no_cache: false });
        assert_eq!(parse_cache_control("MAX-AGE=\"60\""), CacheControl { max_age: Some(60), no_cache: false });
        assert!(parse_cache_control("no-cache").no_cache);
        assert!(parse_cache_control("no-store, max-age=99").no_cache);
        assert!(parse_cache_control("max-age=abc").no_cache);
        assert!(parse_cache_control("max-age=-1").no_cache);
        assert_eq!(parse_cache_control("max-age=100, max-age=50").max_age, Some(50));
        assert_eq!(parse_cache_control(""), CacheControl::default());
    }

    #[test]
    fn ttl_table() {
        let r = remote("");
        let cases: Vec<(KeySet, Option<&str>, u64)> = vec![
            (set(Some(3600), Some(300)), Some("max-age=300"), 300_000),
            (set(Some(3600), None), None, 3_600_000),
            (set(Some(3600), Some(300)), Some("max-age=120"), 120_000),
            (set(None, None), None, DEFAULT_TTL_MS),
            (set(Some(3600), None), Some("no-cache"), 30_000),
            (set(Some(3600), None), Some("max-age=0"), 30_000),
            (set(Some(5), None), None, 30_000),
            (set(Some(10 * 86_400), None), None, 86_400_000),
        ];
        for (s, cc, want) in cases {
            assert_eq!(ttl_ms(&r, &s, cc), want, "{:?} {:?} {cc:?}", s.cache_max_age, s.edge_ttl);
        }
        let fixed = remote(r#","cache_duration":"7s""#);
        assert_eq!(ttl_ms(&fixed, &set(Some(3600), None), Some("no-cache")), 7_000);
        let narrow = remote(r#","min_cache_duration":"1s","max_cache_duration":"60s""#);
        assert_eq!(ttl_ms(&narrow, &set(Some(3600), None), None), 60_000);
        assert_eq!(ttl_ms(&narrow, &set(None, None), Some("no-cache")), 1_000);
    }

    #[test]
    fn backoff_grows_capped_with_jitter() {
        let r = remote(r#","retry_policy":{"retry_back_off":{"base_interval":"1s","max_interval":"16s"}}"#);
        for (n, full) in [(1u32, 1000u64), (2, 2000), (3, 4000), (5, 16000), (9, 16000), (u32::MAX, 16000)] {
            let lo = backoff_ms(&r, n, 0);
            let hi = backoff_ms(&r, n, u64::MAX - 1);
            assert_eq!(lo, full / 2, "n={n}");
            assert!(hi <= full && hi >= lo, "n={n} hi={hi}");
        }
    }

    #[test]
    fn records_round_trip() {
        let e = Entry { fetched_at_ms: 1, expires_at_ms: 2, source: 3, body: b"{\"keys\":[]}\n".to_vec() };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        let c = Control { lease_until_ms: 9, lease_holder: 7, failures: 2, next_attempt_ms: 5, last_forced_ms: 4, forced_wanted: true, forced_in_flight: true };
        assert_eq!(Control::decode(&c.encode()), Some(c));
        assert_eq!(Entry::decode(b"garbage"), None);
        assert_eq!(Control::decode(b"C1 1 2"), None);
    }

    #[test]
    fn lease_and_due() {
        let r = remote("");
        let now = 1_000_000;
        let free = Control::default();
        assert_eq!(due(None, &free, now), Some(Due::Initial));
        assert_eq!(due(Some(now + 1), &free, now), None);
        assert_eq!(due(Some(now), &free, now), Some(Due::Expired));
        let leased = take_lease(&free, 42, now, 2_000, Due::Initial);
        assert!(leased.leased(now + 2_999));
        assert!(!leased.leased(now + 3_000), "a dead holder's lease runs out");
        assert_eq!(due(None, &leased, now + 10), None, "single flight");
        let failed = after_failure(&leased, &r, now, 0);
        assert_eq!(failed.failures, 1);
        assert_eq!(due(None, &failed, now + 10), None, "backing off");
        assert_eq!(due(None, &failed, failed.next_attempt_ms), Some(Due::Initial));
        let ok = after_success(&failed, now);
        assert_eq!((ok.failures, ok.next_attempt_ms, ok.lease_until_ms), (0, 0, 0));
    }

    #[test]
    fn forced_refetch_cooldown() {
        let r = remote(r#","refetch_cooldown":"30s""#);
        let now = 10_000_000;
        let c = Control::default();
        let wanted = want_forced(&c, &r, now).expect("first unknown kid asks");
        assert_eq!(want_forced(&wanted, &r, now), None, "already asked");
        assert_eq!(due(Some(now + 60_000), &wanted, now), Some(Due::Forced));
        let leased = take_lease(&wanted, 1, now, 2_000, Due::Forced);
        assert!(leased.may_force(&r, now + 1_000), "requests may wait for the fetch under way");
        assert_eq!(want_forced(&leased, &r, now + 1_000), None, "no second forced fetch while one runs");
        // A slow fetch: the cooldown runs from its end, and parked requests
        // stop waiting once it is done.
        let done = after_success(&leased, now + 1_500);
        assert!(!done.may_force(&r, now + 1_600));
        assert_eq!(want_forced(&done, &r, now + 31_499), None, "cooldown");
        assert!(want_forced(&done, &r, now + 31_500).is_some());
        let failed = after_failure(&leased, &r, now + 1_500, 0);
        assert!(!failed.may_force(&r, now + 1_600), "a failed forced fetch also ends the wait");
    }

    #[test]
    fn staleness() {
        let r = remote(r#","max_stale":"100s""#);
        let e = Entry { fetched_at_ms: 0, expires_at_ms: 1_000, source: 0, body: Vec::new() };
        assert_eq!(freshness(&e, &r, 999), Freshness::Fresh);
        assert_eq!(freshness(&e, &r, 1_000), Freshness::Stale);
        assert_eq!(freshness(&e, &r, 100_999), Freshness::Stale);
        assert_eq!(freshness(&e, &r, 101_000), Freshness::Expired);
    }
}
