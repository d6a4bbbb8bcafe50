//! The root context: compiles the config once, keeps the shared JWKS cache
//! fresh (single-flight via a lease in shared data), and finishes requests
//! paused while keys were loading.
use super::apply::{apply, Next};
use super::host;
use super::http::{Http, WAIT_TICK_MS};
use super::state::{key_prefix, VmState};
use crate::cache::{self, Due, Entry};
use crate::config::Config;
use crate::engine::{decide, Decision, Request};
use crate::jwks::KeySet;
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
    pub plugin_name: String,
}

impl Root {
    pub fn new(id: u32) -> Root {
        Root { id, state: None, plugin_name: String::new() }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        self.plugin_name = host::property(&["plugin_name"])
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| "edge-jwt".into());
        let bytes = host::plugin_config().unwrap_or_default();
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                error!("edge-jwt: config of plugin {:?} refused: {e}", self.plugin_name);
                return false;
            }
        };
        let seed = host::now_nanos() ^ u64::from(self.id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let remotes = config.providers.iter().filter(|p| p.remote.is_some()).count();
        info!(
            "edge-jwt: plugin {:?} configured: {} provider(s), {} remote, {} rule(s), shared-data prefix {:?}",
            self.plugin_name,
            config.providers.len(),
            remotes,
            config.rules.len(),
            key_prefix(&self.plugin_name)
        );
        self.state = Some(Rc::new(RefCell::new(VmState::new(config, &self.plugin_name, seed))));
        host::set_tick_ms(if remotes > 0 { FIRST_TICK_MS } else { TICK_MS });
        true
    }

    fn on_tick(&mut self) {
        let Some(state) = self.state.clone() else { return };
        self.refresh(&state);
        self.finish_waiters(&state);
        let waiting = state.try_borrow().map_or(false, |s| !s.waiters.is_empty());
        host::set_tick_ms(if waiting { WAIT_TICK_MS } else { TICK_MS });
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let state = self.state.clone()?;
        Some(Box::new(Http { id: context_id, state }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// Syncs every source from shared data, and fetches those that are due
    /// when this VM wins the lease.
    fn refresh(&mut self, state: &Rc<RefCell<VmState>>) {
        let Ok(mut s) = state.try_borrow_mut() else { return };
        let now = host::now_ms();
        s.now_ms = now;
        let config = s.config.clone();
        for (p, provider) in config.providers.iter().enumerate() {
            let Some(remote) = &provider.remote else { continue };
            for (i, source) in remote.sources.iter().enumerate() {
                s.sync_source(p, i);
                let expires = s.sources.get(p).and_then(|v| v.get(i)).and_then(|v| v.entry.as_ref()).map(|e| e.expires_at_ms);
                let (control, _) = s.control(p, i);
                let Some(due) = cache::due(expires, &control, now) else { continue };
                let holder = s.holder_id;
                let Some(_) = s.update_control(p, i, |c| {
                    // Re-check under CAS: another VM may have taken it.
                    let still_due = cache::due(expires, c, now)?;
                    Some(cache::take_lease(c, holder, now, source.timeout_ms, still_due))
                }) else {
                    continue;
                };
                let headers = vec![
                    (":method", "GET"),
                    (":path", source.path.as_str()),
                    (":authority", source.authority.as_str()),
                    ("accept", "application/json"),
                    ("user-agent", "edge-jwt"),
                ];
                match self.dispatch_http_call(
                    &source.cluster,
                    headers,
                    None,
                    vec![],
                    Duration::from_millis(source.timeout_ms),
                ) {
                    Ok(token) => {
                        if due != Due::Expired {
                            info!("edge-jwt: fetching JWKS {} ({due:?})", source.uri);
                        }
                        s.calls.insert(token, (p, i));
                    }
                    Err(status) => {
                        let r = s.rng.next();
                        s.update_control(p, i, |c| Some(cache::after_failure(c, remote, now, r)));
                        fetch_failed(&mut s, p, i, &format!("callout to cluster {:?} refused: {status:?}", source.cluster));
                    }
                }
            }
        }
    }

    /// Re-decides paused requests; those that are decided are resumed or
    /// answered. Borrows are dropped before any host call that may re-enter.
    fn finish_waiters(&mut self, state: &Rc<RefCell<VmState>>) {
        let (ready, config, verdict_header) = {
            let Ok(mut s) = state.try_borrow_mut() else { return };
            if s.waiters.is_empty() {
                return;
            }
            let now = host::now_ms();
            s.now_ms = now;
            let providers: Vec<usize> = s.waiters.values().map(|w| w.provider).collect();
            for p in providers {
                s.sync_provider(p);
            }
            let config = s.config.clone();
            let mut ready = Vec::new();
            let ids: Vec<u32> = s.waiters.keys().copied().collect();
            for id in ids {
                let Some(w) = s.waiters.get(&id) else { continue };
                let may_wait = now < w.deadline_ms;
                let req = Request { method: &w.method, path: &w.path, headers: &w.headers };
                let d = decide(&config, &*s, &req, (now / 1000) as i64, may_wait);
                if !matches!(d, Decision::Wait { .. }) {
                    s.waiters.remove(&id);
                    ready.push((id, d));
                }
            }
            (ready, config, s.verdict_header.clone())
        };
        let _ = config;
        for (id, decision) in ready {
            if !host::set_effective_context(id) {
                continue;
            }
            if let Next::Continue = apply(&decision, &verdict_header) {
                host::resume_request();
            }
        }
        host::set_effective_context(self.id);
    }

    fn on_fetch(&mut self, token: u32, body_size: usize) {
        let Some(state) = self.state.clone() else { return };
        let Ok(mut s) = state.try_borrow_mut() else { return };
        let Some((p, i)) = s.calls.remove(&token) else { return };
        let config = s.config.clone();
        let Some(remote) = config.providers.get(p).and_then(|x| x.remote.as_ref()) else { return };
        let Some(source) = remote.sources.get(i) else { return };
        let now = host::now_ms();
        s.now_ms = now;
        let status = host::call_response_header(":status");
        let outcome: Result<(KeySet, Vec<u8>), String> = match status.as_deref() {
            None => Err("no response (timeout or connection failure)".into()),
            Some(b"200") if body_size > remote.max_body_bytes => {
                Err(format!("body of {body_size} bytes is over the {} byte cap", remote.max_body_bytes))
            }
            Some(b"200") => {
                let body = host::call_response_body(body_size).unwrap_or_default();
                KeySet::parse(&body, remote.max_body_bytes).map(|k| (k, body)).map_err(|e| e.to_string())
            }
            Some(other) => Err(format!("HTTP status {}", String::from_utf8_lossy(other))),
        };
        match outcome {
            Ok((set, body)) => {
                let cc = host::call_response_header("cache-control").and_then(|v| String::from_utf8(v).ok());
                let ttl = cache::ttl_ms(remote, &set, cc.as_deref());
                let entry = Entry { fetched_at_ms: now, expires_at_ms: now + ttl, source: i as u32, body };
                let key = s.sources.get(p).and_then(|v| v.get(i)).map(|v| v.entry_key.clone()).unwrap_or_default();
                // The lease makes this VM the only writer; plain set is safe,
                // and a slow holder whose lease ran out only rewrites fresh keys.
                if !host::shared_set(&key, &entry.encode(), None) {
                    warn!("edge-jwt: could not store JWKS from {} in shared data", source.uri);
                }
                let (before, _) = s.control(p, i);
                s.update_control(p, i, |c| Some(cache::after_success(c)));
                let kids: Vec<&str> = set.kids().collect();
                let recovered = before.failures > 0;
                if recovered || s.sources.get(p).and_then(|v| v.get(i)).is_some_and(|v| v.keys.is_none()) {
                    info!(
                        "edge-jwt: JWKS from {} loaded{}: {} key(s) {:?}, {} skipped, ttl {}s",
                        source.uri,
                        if recovered { " (recovered)" } else { "" },
                        set.keys.len(),
                        kids,
                        set.skipped.len(),
                        ttl / 1000
                    );
                }
                if let Some(v) = s.sources.get_mut(p).and_then(|v| v.get_mut(i)) {
                    v.logged_failing = false;
                }
                s.sync_source(p, i);
            }
            Err(why) => {
                let r = s.rng.next();
                s.update_control(p, i, |c| Some(cache::after_failure(c, remote, now, r)));
                fetch_failed(&mut s, p, i, &why);
            }
        }
        drop(s);
        self.finish_waiters(&state);
    }
}

/// Logs a failing source once per state change, not once per attempt.
fn fetch_failed(s: &mut VmState, p: usize, i: usize, why: &str) {
    let uri = s
        .remote(p)
        .and_then(|r| r.sources.get(i))
        .map(|x| x.uri.clone())
        .unwrap_or_default();
    let Some(v) = s.sources.get_mut(p).and_then(|v| v.get_mut(i)) else { return };
    if !v.logged_failing {
        v.logged_failing = true;
        let kept = if v.keys.is_some() { "keeping the last good key set" } else { "no key set yet" };
        warn!("edge-jwt: JWKS fetch from {uri} failed: {why}; {kept}; retrying with backoff");
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        self.on_fetch(token, body_size);
    }
}
