//! The root context: compiles the config once, keeps the shared feeds
//! (JWKS sources, revocation list) fresh with one fetch per refresh window
//! across all workers (a lease in shared data), and finishes requests that
//! were paused while keys were loading.
use super::apply::{apply, Next};
use super::host;
use super::http::{count, log_outcome, Http, WAIT_TICK_MS};
use super::state::FeedKind;
use super::state::{key_prefix, Parsed, VmState};
use crate::cache::{self, Due, Entry};
use crate::config::Config;
use crate::engine::{decide, Decision, Request, Wait};
use log::{error, info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Regular tick: TTL checks and syncing with other workers' fetches.
const TICK_MS: u64 = 1_000;
/// First tick soon after start, so the first fetch is not a second late.
const FIRST_TICK_MS: u64 = 10;

pub struct Root {
    pub id: u32,
    pub state: Option<Rc<RefCell<VmState>>>,
}

impl Root {
    pub fn new(id: u32) -> Root {
        Root { id, state: None }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let plugin_name = host::property(&["plugin_name"])
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| "edge-jwt".into());
        let bytes = host::plugin_config().unwrap_or_default();
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                error!("edge-jwt: config of plugin {plugin_name:?} refused: {e}");
                return false;
            }
        };
        let seed = host::now_nanos() ^ u64::from(self.id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let state = VmState::new(config, &plugin_name, seed);
        // Envoy's shared data has no atomic create (a CAS on a missing key
        // always succeeds), so the control records are made here, on the
        // main thread's configure before any worker ticks; every lease is
        // then taken by a real compare-and-swap.
        for feed in &state.feeds {
            if host::shared_get(&feed.control_key).0.is_none() {
                host::shared_set(&feed.control_key, &crate::cache::Control::default().encode(), None);
            }
        }
        info!(
            "edge-jwt: plugin {plugin_name:?} configured: {} provider(s), {} rule(s), {} feed(s), shared-data prefix {:?}",
            state.config.providers.len(),
            state.config.rules.len(),
            state.feeds.len(),
            key_prefix(&plugin_name)
        );
        host::set_tick_ms(if state.feeds.is_empty() { TICK_MS } else { FIRST_TICK_MS });
        self.state = Some(Rc::new(RefCell::new(state)));
        true
    }

    fn on_tick(&mut self) {
        let Some(state) = self.state.clone() else { return };
        self.refresh(&state);
        self.finish_waiters(&state);
        let waiting = state.try_borrow().is_ok_and(|s| !s.waiters.is_empty());
        host::set_tick_ms(if waiting { WAIT_TICK_MS } else { TICK_MS });
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it, which would kill the VM.
        Some(Box::new(Http { id: context_id, state: self.state.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        self.on_fetched(token, body_size);
    }
}

impl Root {
    /// Syncs every feed from shared data, and fetches those that are due
    /// when this VM wins the lease.
    fn refresh(&mut self, state: &Rc<RefCell<VmState>>) {
        let Ok(mut s) = state.try_borrow_mut() else { return };
        let now = host::now_ms();
        s.now_ms = now;
        s.sync_all();
        s.record_gauges();
        for f in 0..s.feeds.len() {
            let Some(feed) = s.feeds.get(f) else { continue };
            let expires = feed.entry.as_ref().map(|e| e.expires_at_ms);
            let Some(source) = feed.source().cloned() else { continue };
            if cache::due(expires, &s.control(f), now).is_none() {
                continue;
            }
            let holder = s.holder_id;
            let mut took = None;
            let leased = s.update_control(f, |c| {
                // Re-checked under CAS: another VM may have just taken it.
                let due = cache::due(expires, c, now)?;
                took = Some(due);
                Some(cache::take_lease(c, holder, now, source.timeout_ms, due))
            });
            let (Some(_), Some(due)) = (leased, took) else { continue };
            let headers = vec![
                (":method", "GET"),
                (":path", source.path.as_str()),
                (":authority", source.authority.as_str()),
                ("accept", "application/json"),
                ("user-agent", "edge-jwt"),
            ];
            let timeout = Duration::from_millis(source.timeout_ms);
            match self.dispatch_http_call(&source.cluster, headers, None, vec![], timeout) {
                Ok(token) => {
                    if due != Due::Expired {
                        info!("edge-jwt: fetching {} ({due:?})", s.feeds.get(f).map(|x| x.name()).unwrap_or_default());
                    }
                    s.calls.insert(token, f);
                }
                Err(status) => {
                    fetch_failed(&mut s, f, now, &format!("callout to cluster {:?} refused: {status:?}", source.cluster));
                }
            }
        }
    }

    /// Re-decides paused requests; those decided are answered or resumed.
    /// The state borrow ends before any host call that may re-enter.
    fn finish_waiters(&mut self, state: &Rc<RefCell<VmState>>) {
        let (ready, config) = {
            let Ok(mut s) = state.try_borrow_mut() else { return };
            if s.waiters.is_empty() {
                return;
            }
            let now = host::now_ms();
            s.now_ms = now;
            s.sync_all();
            let config = s.config.clone();
            let mut ready = Vec::new();
            let mut cache = std::mem::take(&mut s.cache);
            let ids: Vec<u32> = s.waiters.keys().copied().collect();
            for id in ids {
                let Some(w) = s.waiters.get(&id) else { continue };
                let req = Request { method: &w.method, path: &w.path, headers: &w.headers };
                let may_wait = now < w.deadline_ms;
                let d = decide(&config, &*s, &req, (now / 1000) as i64, may_wait, &mut cache);
                if let Decision::Wait { provider, why: Wait::UnknownKid } = d {
                    // Still unknown after the last fetch, and the cooldown
                    // allows another: ask for it (a no-op if one is pending).
                    s.request_forced(provider);
                }
                if !matches!(d, Decision::Wait { .. }) {
                    log_outcome(id, &w.method, &w.path, &d);
                    ready.push((id, d));
                }
            }
            let cache_on = cache.enabled();
            s.cache = cache;
            for (id, d) in &ready {
                s.waiters.remove(id);
                count(&mut s.metrics, d, cache_on);
                if !matches!(d, Decision::Verified { .. }) {
                    s.metrics.inc("paused_then_refused");
                }
            }
            (ready, config)
        };
        for (id, decision) in ready {
            if !host::set_effective_context(id) {
                continue;
            }
            if let Next::Continue = apply(&config, &decision) {
                host::resume_request();
            }
        }
        host::set_effective_context(self.id);
    }

    fn on_fetched(&mut self, token: u32, body_size: usize) {
        let Some(state) = self.state.clone() else { return };
        {
            let Ok(mut s) = state.try_borrow_mut() else { return };
            let Some(f) = s.calls.remove(&token) else { return };
            let now = host::now_ms();
            s.now_ms = now;
            match read_response(&s, f, body_size) {
                Ok((parsed, body)) => {
                    count_fetch(&mut s, f, true);
                    stored(&mut s, f, now, parsed, body);
                }
                Err(why) => fetch_failed(&mut s, f, now, &why),
            }
        }
        self.finish_waiters(&state);
    }
}

/// Every way a callout can be unusable is a failed fetch: no answer, a
/// non-200 status, a body over the cap, or a body that does not parse.
fn read_response(s: &VmState, f: usize, body_size: usize) -> Result<(Parsed, Vec<u8>), String> {
    let feed = s.feeds.get(f).ok_or("unknown feed")?;
    let cap = feed.remote.max_body_bytes;
    match host::call_response_header(":status").as_deref() {
        None => Err("no response (timeout or connection failure)".into()),
        Some(b"200") if body_size > cap => Err(format!("body of {body_size} bytes is over the {cap} byte cap")),
        Some(b"200") => {
            let body = host::call_response_body(body_size).unwrap_or_default();
            feed.parse(&body).map(|p| (p, body))
        }
        Some(other) => Err(format!("HTTP status {}", String::from_utf8_lossy(other))),
    }
}

/// Publishes a good fetch to every worker and resets the failure state.
fn stored(s: &mut VmState, f: usize, now: u64, parsed: Parsed, body: Vec<u8>) {
    let Some(feed) = s.feeds.get(f) else { return };
    let remote = feed.remote.clone();
    let cc = host::call_response_header("cache-control").and_then(|v| String::from_utf8(v).ok());
    let ttl = match &parsed {
        Parsed::Keys(set) => cache::ttl_ms(&remote, set, cc.as_deref()),
        Parsed::Revoked(_) => remote.cache_duration_ms.unwrap_or(remote.min_ttl_ms),
    };
    let source = match feed.kind {
        super::state::FeedKind::Jwks { source, .. } => source as u32,
        super::state::FeedKind::Revocation => 0,
    };
    let entry = Entry { fetched_at_ms: now, expires_at_ms: now.saturating_add(ttl), source, body };
    // The lease makes this VM the only writer in this window.
    if !host::shared_set(&feed.entry_key, &entry.encode(), None) {
        warn!("edge-jwt: could not store {} in shared data", feed.name());
    }
    let before = s.control(f);
    s.update_control(f, |c| Some(cache::after_success(c, now)));
    let first = feed.parsed.is_none();
    if first || before.failures > 0 {
        let what = match &parsed {
            Parsed::Keys(k) => format!(
                "{} key(s) {:?}, {} skipped",
                k.keys.len(),
                k.kids().collect::<Vec<_>>(),
                k.skipped.len()
            ),
            Parsed::Revoked(l) => format!("{} jti, {} sub", l.jti.len(), l.sub.len()),
        };
        let recovered = if before.failures > 0 { " (recovered)" } else { "" };
        info!("edge-jwt: {} loaded{recovered}: {what}, ttl {}s", feed.name(), ttl / 1000);
    }
    s.sync(f);
    // The tick recorded the gauges before this fetch; refresh them now so
    // `stale` does not linger after a good refresh.
    s.now_ms = now;
    s.record_gauges();
}

fn count_fetch(s: &mut VmState, f: usize, ok: bool) {
    let kind = s.feeds.get(f).map(|x| x.kind);
    let name = match (kind, ok) {
        (Some(FeedKind::Revocation), true) => "revocation_fetch_success",
        (Some(FeedKind::Revocation), false) => "revocation_fetch_failed",
        (_, true) => "jwks_fetch_success",
        (_, false) => "jwks_fetch_failed",
    };
    s.metrics.inc(name);
}

/// Records a failed fetch in the shared record (backoff) and logs it once
/// per state change: only the VM that turns the feed from healthy to
/// failing logs, whichever worker that is.
fn fetch_failed(s: &mut VmState, f: usize, now: u64, why: &str) {
    count_fetch(s, f, false);
    let Some(feed) = s.feeds.get(f) else { return };
    let remote = feed.remote.clone();
    let r = s.rng.next();
    let written = s.update_control(f, |c| Some(cache::after_failure(c, &remote, now, r)));
    if written.is_some_and(|c| c.failures == 1) {
        let Some(feed) = s.feeds.get(f) else { return };
        let kept = if feed.parsed.is_some() { "keeping the last good copy" } else { "nothing loaded yet" };
        warn!("edge-jwt: fetch of {} failed: {why}; {kept}; retrying with backoff", feed.name());
    }
}
