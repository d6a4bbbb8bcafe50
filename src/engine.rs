//! The per-request decision, as a pure function of the compiled config, the
//! request and the keys at hand. The host glue only gathers inputs and
//! carries the decision out.
use crate::config::{Config, Rule};
use crate::crypto::PublicKey;
use crate::extract::{extract, ExtractError, Extracted, RequestParts};
use crate::token::{self, KeyLookup, TokenError, Verified};
use serde_json::Value;

/// What the key store can say about one provider right now.
pub enum KeyState<'k> {
    Ready(Ring<'k>),
    /// No key set yet (cold start): worth waiting for.
    Loading,
    /// Keys went stale past the allowed limit: fail closed.
    Unavailable,
}

pub trait KeyStore {
    fn keys(&self, provider: usize) -> KeyState<'_>;
    /// Whether an unknown `kid` may trigger a refetch now (cooldown).
    fn can_refetch(&self, provider: usize) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    ColdStart,
    UnknownKid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    /// Value of `WWW-Authenticate`, when the status calls for one.
    pub www_authenticate: Option<String>,
    pub retry_after: Option<u32>,
    pub body: String,
    /// Short stable reason code for stats and logs.
    pub code: &'static str,
}

#[derive(Debug)]
pub enum Decision {
    /// No rule matched: pass untouched.
    NoRule,
    /// A rule with no requirement.
    Bypass,
    Verified { provider: usize, verified: Verified, strip_headers: Vec<String> },
    /// Optional JWT absent.
    MissingAllowed,
    /// `allow_missing_or_failed` let a bad token through, unverified.
    FailedAllowed { code: &'static str },
    Deny(Denial),
    /// Pause the request until keys change; then decide again.
    Wait { provider: usize, why: Wait },
}

pub struct Request<'r> {
    pub method: &'r str,
    pub path: &'r [u8],
    pub headers: &'r [(String, Vec<u8>)],
}

pub fn match_rule<'c>(config: &'c Config, req: &Request) -> Option<&'c Rule> {
    let path = String::from_utf8_lossy(req.path);
    config.rules.iter().find(|r| r.matches(req.method, &path))
}

fn quote(s: &str) -> String {
    // error_description must be a quoted-string of printable ASCII without
    // '"' or '\' (RFC 6750 §3).
    s.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ').collect()
}

pub fn deny_invalid(config: &Config, description: &str, code: &'static str) -> Denial {
    Denial {
        status: 401,
        www_authenticate: Some(format!(
            "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
            config.realm,
            quote(description)
        )),
        retry_after: None,
        body: description.to_string(),
        code,
    }
}

fn deny_missing(config: &Config) -> Denial {
    Denial {
        status: 401,
        www_authenticate: Some(format!("Bearer realm=\"{}\"", config.realm)),
        retry_after: None,
        body: "Jwt is missing".into(),
        code: "missing",
    }
}

fn deny_scope(config: &Config, scopes: &[String]) -> Denial {
    let wanted = quote(&scopes.join(" "));
    Denial {
        status: 403,
        www_authenticate: Some(format!(
            "Bearer realm=\"{}\", error=\"insufficient_scope\", error_description=\"Jwt lacks a required scope\", scope=\"{wanted}\"",
            config.realm
        )),
        retry_after: None,
        body: "Jwt lacks a required scope".into(),
        code: "insufficient_scope",
    }
}

/// The answer when keys cannot be had in time: 503 with `Retry-After`
/// (the default), or 401 when the provider is so configured.
pub fn deny_keys_unavailable(config: &Config, provider: usize) -> Denial {
    let status = config
        .providers
        .get(provider)
        .and_then(|p| p.remote.as_ref())
        .map_or(503, |r| r.keys_unavailable_status);
    if status == 401 {
        return deny_invalid(config, "Jwks is not available", "keys_unavailable");
    }
    Denial {
        status: 503,
        www_authenticate: None,
        retry_after: Some(5),
        body: "Jwks is not available yet".into(),
        code: "keys_unavailable",
    }
}

/// True when the token's `scope` (space-separated string or array) holds
/// every required scope.
pub fn has_scopes(claims: &serde_json::Map<String, Value>, required: &[String]) -> bool {
    if required.is_empty() {
        return true;
    }
    let granted: Vec<&str> = match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    required.iter().all(|r| granted.contains(&r.as_str()))
}

/// Decides one request. `may_wait` is false once a paused request has used
/// up its wait, so the answer is then final.
pub fn decide(config: &Config, keys: &dyn KeyStore, req: &Request, now: i64, may_wait: bool) -> Decision {
    let Some(rule) = match_rule(config, req) else { return Decision::NoRule };
    let Some(requirement) = &rule.requires else { return Decision::Bypass };
    let parts = RequestParts { headers: req.headers, path: req.path };
    let mut first_failure: Option<Denial> = None;
    for &p in &requirement.providers {
        let Some(provider) = config.providers.get(p) else { continue };
        let (tok, headers) = match extract(&provider.locations, &parts) {
            Extracted::Missing => continue,
            Extracted::Invalid(e) => {
                first_failure.get_or_insert_with(|| deny_extract(config, e));
                continue;
            }
            Extracted::Found { token, headers } => (token, headers),
        };
        let ring = match keys.keys(p) {
            KeyState::Ready(k) => k,
            KeyState::Loading if may_wait => return Decision::Wait { provider: p, why: Wait::ColdStart },
            KeyState::Loading | KeyState::Unavailable => {
                first_failure.get_or_insert_with(|| deny_keys_unavailable(config, p));
                continue;
            }
        };
        match token::verify(tok, config.max_token_bytes, &ring, &provider.claims, now) {
            Ok(verified) => {
                if !has_scopes(&verified.claims, &rule.required_scopes) {
                    return Decision::Deny(deny_scope(config, &rule.required_scopes));
                }
                let strip = if provider.forward { Vec::new() } else { headers };
                return Decision::Verified { provider: p, verified, strip_headers: strip };
            }
            Err(TokenError::UnknownKid) if may_wait && provider.remote.is_some() && keys.can_refetch(p) => {
                return Decision::Wait { provider: p, why: Wait::UnknownKid };
            }
            Err(e) => {
                first_failure.get_or_insert_with(|| deny_invalid(config, &e.to_string(), e.code()));
            }
        }
    }
    match first_failure {
        Some(d) if requirement.allow_failed => Decision::FailedAllowed { code: d.code },
        Some(d) => Decision::Deny(d),
        None if requirement.allow_missing => Decision::MissingAllowed,
        None => Decision::Deny(deny_missing(config)),
    }
}

fn deny_extract(config: &Config, e: ExtractError) -> Denial {
    deny_invalid(config, &e.to_string(), e.code())
}

/// A `KeyLookup` over several key sets in priority order: the first set
/// that names a `kid` decides it, with no fallback to later sets.
pub struct Ring<'k> {
    pub sets: Vec<&'k crate::jwks::KeySet>,
}

impl KeyLookup for Ring<'_> {
    fn by_kid(&self, kid: &str) -> Option<&PublicKey> {
        self.sets.iter().find_map(|s| s.find(kid))
    }

    fn sole_key(&self) -> Option<&PublicKey> {
        let mut keys = self.sets.iter().flat_map(|s| s.keys.iter().map(|k| &k.key));
        let first = keys.next()?;
        // The same key served by two sources is still one key.
        keys.all(|k| k == first).then_some(first)
    }

    fn is_empty(&self) -> bool {
        self.sets.iter().all(|s| s.keys.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::KeySet;
    use crate::token::testkit::*;
    use serde_json::json;

    const NOW: i64 = 1_760_000_000;

    struct Keys {
        set: Option<KeySet>,
        refetch: bool,
    }
    impl KeyStore for Keys {
        fn keys(&self, _: usize) -> KeyState<'_> {
            match &self.set {
                Some(s) => KeyState::Ready(Ring { sets: vec![s] }),
                None => KeyState::Loading,
            }
        }
        fn can_refetch(&self, _: usize) -> bool {
            self.refetch
        }
    }

    fn keys() -> Keys {
        let doc = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{}"}}]}}"#,
            x_of(&signing_key(1))
        );
        Keys { set: Some(KeySet::parse(doc.as_bytes(), 1 << 16).expect("jwks")), refetch: true }
    }

    fn config() -> Config {
        Config::from_json(
            br#"{"providers":{
                "p":{"issuer":"iss","audiences":["api"],"forward":false,
                     "remote_jwks":{"http_uri":{"uri":"http://h/jwks","cluster":"c"}}}},
              "rules":[
                {"match":{"prefix":"/public"}},
                {"match":{"prefix":"/opt"},"requires":{"requires_any":{"requirements":[{"provider_name":"p"},{"allow_missing":{}}]}}},
                {"match":{"prefix":"/audit"},"requires":{"requires_any":{"requirements":[{"provider_name":"p"},{"allow_missing_or_failed":{}}]}}},
                {"match":{"prefix":"/admin"},"requires":{"provider_name":"p"},"required_scopes":["admin"]},
                {"match":{"prefix":"/"},"requires":{"provider_name":"p"}}]}"#,
        )
        .expect("config")
    }

    fn token(kid: &str, scope: Value) -> String {
        sign(
            &json!({"alg":"EdDSA","kid":kid}),
            &json!({"iss":"iss","aud":["api"],"exp":NOW+900,"scope":scope}),
            &signing_key(1),
        )
    }

    fn run(path: &str, auth: Option<&str>, keys: &Keys, may_wait: bool) -> Decision {
        let headers: Vec<(String, Vec<u8>)> =
            auth.map(|a| vec![("authorization".to_string(), a.as_bytes().to_vec())]).unwrap_or_default();
        decide(&config(), keys, &Request { method: "GET", path: path.as_bytes(), headers: &headers }, NOW, may_wait)
    }

    fn status(d: &Decision) -> u16 {
        match d {
            Decision::Deny(d) => d.status,
            Decision::Wait { .. } => 0,
            _ => 200,
        }
    }

    #[test]
    fn rules_and_outcomes() {
        let k = keys();
        let good = format!("Bearer {}", token("k1", json!("read admin")));
        let read_only = format!("Bearer {}", token("k1", json!(["read"])));
        assert!(matches!(run("/public/x", None, &k, true), Decision::Bypass));
        assert!(matches!(run("/x", Some(&good), &k, true), Decision::Verified { .. }));
        assert_eq!(status(&run("/x", None, &k, true)), 401);
        assert!(matches!(run("/opt", None, &k, true), Decision::MissingAllowed));
        assert_eq!(status(&run("/opt", Some("Bearer x.y.z"), &k, true)), 401);
        assert!(matches!(run("/audit", Some("Bearer x.y.z"), &k, true), Decision::FailedAllowed { .. }));
        assert_eq!(status(&run("/admin", Some(&good), &k, true)), 200);
        assert_eq!(status(&run("/admin", Some(&read_only), &k, true)), 403);
        let Decision::Verified { strip_headers, .. } = run("/x", Some(&good), &k, true) else { panic!("verified") };
        assert_eq!(strip_headers, vec!["authorization".to_string()], "forward: false");
        let Decision::Deny(d) = run("/x", None, &k, true) else { panic!("deny") };
        assert_eq!(d.www_authenticate.as_deref(), Some("Bearer realm=\"edge-jwt\""));
        let Decision::Deny(d) = run("/admin", Some(&read_only), &k, true) else { panic!("deny") };
        assert!(d.www_authenticate.unwrap_or_default().contains("error=\"insufficient_scope\""));
    }

    #[test]
    fn waiting() {
        let cold = Keys { set: None, refetch: true };
        let t = format!("Bearer {}", token("k1", json!("read")));
        assert!(matches!(run("/x", Some(&t), &cold, true), Decision::Wait { why: Wait::ColdStart, .. }));
        assert_eq!(status(&run("/x", Some(&t), &cold, false)), 503);
        // No token never waits on keys.
        assert_eq!(status(&run("/x", None, &cold, true)), 401);
        let k = keys();
        let unknown = format!("Bearer {}", token("k9", json!("read")));
        assert!(matches!(run("/x", Some(&unknown), &k, true), Decision::Wait { why: Wait::UnknownKid, .. }));
        assert_eq!(status(&run("/x", Some(&unknown), &k, false)), 401);
        let cooling = Keys { refetch: false, ..keys() };
        assert_eq!(status(&run("/x", Some(&unknown), &cooling, true)), 401);
    }

    #[test]
    fn error_description_is_a_safe_quoted_string() {
        let c = config();
        let d = deny_invalid(&c, "bad \"quote\" \\ and \u{7f} ctl", "x");
        let h = d.www_authenticate.unwrap_or_default();
        assert!(h.ends_with("error_description=\"bad quote  and  ctl\""), "{h}");
    }
}
