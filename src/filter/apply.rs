//! Carries a decision out on the current (effective) HTTP context. Used by
//! the HTTP context directly and by the root context when it resumes a
//! paused request.
use super::host;
use crate::config::Config;
use crate::engine::{marks, Decision, Denial};

/// Filter state name; Envoy exposes it as `wasm.custom.jwt_verified`.
pub const VERDICT_PROPERTY: &str = "custom.jwt_verified";

pub enum Next {
    Continue,
    /// A local reply was sent.
    Stop,
}

/// Removes every header the filter may set, whatever the decision, so a
/// client can never supply a verdict or a claim header.
pub fn strip_owned(config: &Config) {
    for h in &config.owned_headers {
        host::remove_request_header(h);
    }
}

pub fn deny(d: &Denial) {
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "text/plain")];
    if let Some(w) = &d.www_authenticate {
        headers.push(("www-authenticate", w));
    }
    let retry = d.retry_after.map(|r| r.to_string());
    if let Some(r) = &retry {
        headers.push(("retry-after", r));
    }
    host::send_response(u32::from(d.status), &headers, d.body.as_bytes());
}

/// Applies a final decision (`Wait` is handled by the caller).
pub fn apply(config: &Config, decision: &Decision) -> Next {
    if let Decision::Deny(d) = decision {
        deny(d);
        return Next::Stop;
    }
    if let Decision::Verified { strip_headers, .. } = decision {
        for h in strip_headers {
            host::remove_request_header(h);
        }
    }
    let m = marks(config, decision);
    if let Some(v) = m.verdict {
        host::set_property(&[VERDICT_PROPERTY], v.as_bytes());
    }
    for (name, value) in &m.headers {
        host::set_request_header(name, value);
    }
    Next::Continue
}
