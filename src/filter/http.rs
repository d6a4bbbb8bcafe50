//! The HTTP context: gathers the request, asks the engine, carries out the
//! answer, or parks the request with the root until keys arrive.
use super::apply::{apply, strip_owned, Next};
use super::host;
use super::metrics::Metrics;
use super::state::{VmState, Waiter};
use crate::engine::{decide, Decision, Request, Wait};
use log::{debug, info};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::Rc;

/// Fast tick while requests wait, so a key set written by another worker
/// is seen within milliseconds.
pub const WAIT_TICK_MS: u64 = 20;

pub struct Http {
    pub id: u32,
    /// `None` only if the root was never configured; such requests are
    /// refused, never waved through.
    pub state: Option<Rc<RefCell<VmState>>>,
}

impl Context for Http {}

impl Drop for Http {
    fn drop(&mut self) {
        // A client that goes away while paused must not leave a waiter.
        if let Some(Ok(mut s)) = self.state.as_ref().map(|s| s.try_borrow_mut()) {
            s.waiters.remove(&self.id);
        }
    }
}

fn header<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> &'h [u8] {
    headers.iter().find(|(k, _)| k == name).map_or(&[], |(_, v)| v.as_slice())
}

fn for_want_of_keys(d: &Decision) -> bool {
    matches!(d, Decision::Deny(x) | Decision::Audited(x) if x.code == "unknown_kid" || x.code == "keys_unavailable")
}

/// Counts a final decision (a `Wait` is counted where it is parked).
pub fn count(m: &mut Metrics, decision: &Decision, cache_on: bool) {
    match decision {
        Decision::NoRule | Decision::Bypass => m.inc("bypassed"),
        Decision::Verified { cached, .. } => {
            m.inc("allowed");
            if cache_on {
                m.inc(if *cached { "jwt_cache_hit" } else { "jwt_cache_miss" });
            }
        }
        Decision::MissingAllowed => m.inc("allowed_missing"),
        Decision::FailedAllowed { .. } => m.inc("allowed_failed"),
        Decision::Session => m.inc("allowed_session"),
        Decision::Audited(d) => {
            m.inc("audit_would_deny");
            m.inc_by("audit_would_deny", d.code);
        }
        Decision::Deny(d) => {
            m.inc("denied");
            m.inc_by("denied", d.code);
        }
        Decision::Wait { .. } => {}
    }
}

/// One log line per denial or audit mark, with the request's context and
/// never the token.
pub fn log_outcome(id: u32, method: &str, path: &[u8], decision: &Decision) {
    let path = String::from_utf8_lossy(path.split(|&b| b == b'?').next().unwrap_or_default()).into_owned();
    match decision {
        Decision::Deny(d) => debug!("edge-jwt: request {id} {method} {path}: {} {}", d.status, d.code),
        Decision::Audited(d) => info!("edge-jwt: audit: request {id} {method} {path} would get {} {}", d.status, d.code),
        _ => {}
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        // Fail closed: without its state the filter cannot decide.
        let Some(Ok(mut state)) = self.state.as_ref().map(|s| s.try_borrow_mut()) else {
            host::send_response(503, &[("content-type", "text/plain")], b"edge-jwt is not ready");
            return Action::Pause;
        };
        let config = state.config.clone();
        strip_owned(&config);
        let headers = host::request_headers();
        let method = String::from_utf8_lossy(header(&headers, ":method")).into_owned();
        let path = header(&headers, ":path").to_vec();
        let started = host::now_nanos();
        let now = started / 1_000_000;
        state.now_ms = now;
        let req = Request { method: &method, path: &path, headers: &headers };
        let mut cache = std::mem::take(&mut state.cache);
        let mut decision = decide(&config, &*state, &req, (now / 1000) as i64, true, &mut cache);
        // This VM's copy of the keys may trail another worker's fetch by up
        // to a tick: before refusing for want of keys, look at shared data
        // once (only a changed entry is parsed) and decide again.
        if for_want_of_keys(&decision) {
            state.sync_all();
            decision = decide(&config, &*state, &req, (now / 1000) as i64, true, &mut cache);
        }
        let cache_on = cache.enabled();
        state.cache = cache;
        if !matches!(decision, Decision::NoRule | Decision::Bypass) {
            let spent_us = host::now_nanos().saturating_sub(started) / 1000;
            state.metrics.histogram("verify_us", spent_us);
        }
        if let Decision::Wait { provider, why } = decision {
            state.metrics.inc("paused");
            if why == Wait::UnknownKid {
                state.metrics.inc("unknown_kid_refetch");
                state.request_forced(provider);
            }
            let deadline_ms = now.saturating_add(state.wait_ms(provider));
            debug!("edge-jwt: request {} waits for keys ({why:?})", self.id);
            state.waiters.insert(self.id, Waiter { deadline_ms, method, path, headers });
            drop(state);
            host::set_tick_ms(WAIT_TICK_MS);
            return Action::Pause;
        }
        count(&mut state.metrics, &decision, cache_on);
        drop(state);
        log_outcome(self.id, &method, &path, &decision);
        match apply(&config, &decision) {
            Next::Continue => Action::Continue,
            Next::Stop => Action::Pause,
        }
    }
}
