//! Carries a decision out on the current (effective) HTTP context. Used by
//! the HTTP context directly and by the root context when it resumes a
//! paused request.
use super::host;
use crate::engine::{Decision, Denial};

/// The verdict as written to the request: `true`, `false`, or a reason.
pub const VERDICT_PROPERTY: &str = "custom.jwt_verified";

pub enum Next {
    Continue,
    /// A local reply was sent.
    Stop,
}

fn mark(verdict_header: &str, verdict: &str) {
    host::set_property(&[VERDICT_PROPERTY], verdict.as_bytes());
    host::set_request_header(verdict_header, verdict);
}

pub fn deny(d: &Denial) {
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "text/plain")];
    if let Some(w) = &d.www_authenticate {
        headers.push(("www-authenticate", w));
    }
    let retry;
    if let Some(r) = d.retry_after {
        retry = r.to_string();
        headers.push(("retry-after", &retry));
    }
    host::send_response(u32::from(d.status), &headers, d.body.as_bytes());
}

/// Applies a final decision (never `Wait`, which the caller handles).
pub fn apply(decision: &Decision, verdict_header: &str) -> Next {
    match decision {
        Decision::NoRule | Decision::Bypass => Next::Continue,
        Decision::Verified { strip_headers, .. } => {
            for h in strip_headers {
                host::remove_request_header(h);
            }
            mark(verdict_header, "true");
            Next::Continue
        }
        Decision::MissingAllowed => {
            mark(verdict_header, "false");
            Next::Continue
        }
        Decision::FailedAllowed { .. } => {
            mark(verdict_header, "false");
            Next::Continue
        }
        Decision::Deny(d) => {
            deny(d);
            Next::Stop
        }
        Decision::Wait { .. } => Next::Continue,
    }
}
