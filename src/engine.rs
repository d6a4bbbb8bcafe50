//! The per-request decision, as a pure function of the compiled config, the
//! request and the keys at hand. The host glue only gathers inputs and
//! carries the decision out.
use crate::config::{Config, Rule};
use crate::crypto::PublicKey;
use crate::extract::{extract, ExtractError, Extracted, RequestParts};
use crate::claim_headers;
use crate::revocation::RevocationList;
use crate::config::Provider;
use crate::token::{self, KeyLookup, TokenError, Verified};
use crate::token_cache::{self, CachedToken, TokenCache};
use std::rc::Rc;
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
    /// The revocation list, when one is configured.
    fn revocation(&self) -> RevocationState<'_> {
        RevocationState::NotConfigured
    }
}

pub enum RevocationState<'k> {
    NotConfigured,
    /// Fresh, or stale but within `max_stale`.
    Usable(&'k RevocationList),
    /// Never loaded yet: worth a short wait.
    Loading,
    /// Stale past `max_stale` (the last list, if any, for the allow policy).
    TooStale(Option<&'k RevocationList>),
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
    Verified {
        provider: usize,
        verified: Rc<Verified>,
        payload_b64: String,
        strip_headers: Vec<String>,
        /// Answered from the verified-token cache.
        cached: bool,
    },
    /// Optional JWT absent.
    MissingAllowed,
    /// `allow_missing_or_failed` let a bad token through, unverified.
    FailedAllowed { code: &'static str },
    /// "JWT or session": no token, but the session cookie is there.
    Session,
    /// Audit mode: this would have been denied; it passes, marked.
    Audited(Denial),
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
pub fn decide(
    config: &Config,
    keys: &dyn KeyStore,
    req: &Request,
    now: i64,
    may_wait: bool,
    cache: &mut TokenCache,
) -> Decision {
    match decide_strict(config, keys, req, now, may_wait, cache) {
        Decision::Deny(d) if config.audit_mode => Decision::Audited(d),
        d => d,
    }
}

fn is_cors_preflight(req: &Request) -> bool {
    let has = |n: &str| req.headers.iter().any(|(k, v)| k == n && !v.is_empty());
    req.method == "OPTIONS" && has("origin") && has("access-control-request-method")
}

fn has_cookie(req: &Request, name: &str) -> bool {
    req.headers
        .iter()
        .filter(|(k, _)| k == "cookie")
        .flat_map(|(_, v)| v.split(|&b| b == b';'))
        .any(|pair| {
            let pair = pair.trim_ascii();
            let mut it = pair.splitn(2, |&b| b == b'=');
            it.next() == Some(name.as_bytes()) && it.next().is_some_and(|v| !v.is_empty())
        })
}

fn revoked(config: &Config, keys: &dyn KeyStore, verified: &Verified, may_wait: bool, p: usize) -> Option<Decision> {
    let (list, fresh_enough) = match keys.revocation() {
        RevocationState::NotConfigured => return None,
        RevocationState::Usable(l) => (Some(l), true),
        RevocationState::Loading if may_wait => return Some(Decision::Wait { provider: p, why: Wait::ColdStart }),
        RevocationState::Loading => (None, false),
        RevocationState::TooStale(l) => (l, false),
    };
    if !fresh_enough && config.revocation.as_ref().is_some_and(|r| r.deny_when_stale) {
        return Some(Decision::Deny(Denial {
            status: 503,
            www_authenticate: None,
            retry_after: Some(5),
            body: "Revocation list is not available".into(),
            code: "revocation_unavailable",
        }));
    }
    // The "allow" policy still honours the last list it had.
    list.filter(|l| l.revokes(&verified.claims))
        .map(|_| Decision::Deny(deny_invalid(config, "Jwt has been revoked", "revoked")))
}

/// Verifies with the cache in front: a hit still re-checks the time
/// claims and that its key is in the current set; anything else is a full
/// verification whose success is remembered.
fn verify_cached(
    config: &Config,
    p: usize,
    provider: &Provider,
    tok: &[u8],
    ring: &Ring,
    now: i64,
    cache: &mut TokenCache,
) -> Result<(Rc<Verified>, bool), TokenError> {
    let h = cache.enabled().then(|| token_cache::hash(tok));
    if let Some(hit) = h.as_ref().and_then(|h| cache.get(h)) {
        let current = match &hit.kid {
            Some(kid) => ring.by_kid(kid),
            None => ring.sole_key(),
        };
        if hit.provider == p && current.map(|k| k.as_bytes()) == Some(&hit.key) {
            let verified = hit.verified.clone();
            cache.hits += 1;
            provider.claims.check(&verified.claims, now)?;
            return Ok((verified, true));
        }
    }
    if let Some(h) = &h {
        cache.remove(h);
        cache.misses += 1;
    }
    let parsed = token::parse(tok, config.max_token_bytes)?;
    let key = parsed.verify_signature(ring)?;
    let claims = parsed.claims()?;
    let exp = provider.claims.check(&claims, now)?;
    let verified = Rc::new(Verified { claims, exp });
    if let Some(h) = h {
        let entry = CachedToken { provider: p, verified: verified.clone(), kid: parsed.kid.clone(), key: *key.as_bytes() };
        cache.insert(h, entry);
    }
    Ok((verified, false))
}

fn decide_strict(
    config: &Config,
    keys: &dyn KeyStore,
    req: &Request,
    now: i64,
    may_wait: bool,
    cache: &mut TokenCache,
) -> Decision {
    if config.bypass_cors_preflight && is_cors_preflight(req) {
        return Decision::Bypass;
    }
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
        match verify_cached(config, p, provider, tok, &ring, now, cache) {
            Ok((verified, cached)) => {
                if let Some(d) = revoked(config, keys, &verified, may_wait, p) {
                    return d;
                }
                if !has_scopes(&verified.claims, &rule.required_scopes) {
                    return Decision::Deny(deny_scope(config, &rule.required_scopes));
                }
                let strip = if provider.forward { Vec::new() } else { headers };
                let payload_b64 = match &provider.forward_payload_header {
                    Some(_) => payload_part(tok),
                    None => String::new(),
                };
                return Decision::Verified { provider: p, verified, payload_b64, strip_headers: strip, cached };
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
        None if config.session_cookie.as_deref().is_some_and(|c| has_cookie(req, c)) => Decision::Session,
        None => Decision::Deny(deny_missing(config)),
    }
}

/// The middle part of a verified token (checked to be base64url already).
fn payload_part(token: &[u8]) -> String {
    let mut parts = token.split(|&b| b == b'.');
    let _ = parts.next();
    parts.next().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default()
}

/// What a decision writes on the request going upstream: the verdict for
/// filter state, and the headers to set. Every header in
/// `config.owned_headers` is removed from the request before these are set.
pub struct Marks {
    /// Value of `custom.jwt_verified`, when the filter had a say.
    pub verdict: Option<&'static str>,
    pub headers: Vec<(String, String)>,
}

pub fn marks(config: &Config, decision: &Decision) -> Marks {
    let mut headers = Vec::new();
    let verdict = match decision {
        Decision::NoRule | Decision::Bypass | Decision::Wait { .. } | Decision::Deny(_) => None,
        Decision::Verified { provider, verified, payload_b64, .. } => {
            if let Some(p) = config.providers.get(*provider) {
                for c in &p.claim_to_headers {
                    if let Some(v) = claim_headers::lookup(&verified.claims, &c.path).and_then(claim_headers::header_value) {
                        headers.push((c.header.clone(), v));
                    }
                }
                if let Some(h) = &p.forward_payload_header {
                    headers.push((h.clone(), payload_b64.clone()));
                }
            }
            Some("true")
        }
        Decision::MissingAllowed => {
            headers.push((config.reason_header.clone(), "missing".into()));
            Some("false")
        }
        Decision::FailedAllowed { code } => {
            headers.push((config.reason_header.clone(), (*code).into()));
            Some("false")
        }
        Decision::Session => {
            headers.push((config.reason_header.clone(), "session".into()));
            Some("false")
        }
        Decision::Audited(d) => {
            headers.push((config.reason_header.clone(), d.code.into()));
            Some("false")
        }
    };
    if let Some(v) = verdict {
        headers.insert(0, (config.verdict_header.clone(), v.into()));
    }
    Marks { verdict, headers }
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
        decide(&config(), keys, &Request { method: "GET", path: path.as_bytes(), headers: &headers }, NOW, may_wait, &mut TokenCache::new(0))
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

    fn config_with(extra: &str, provider_extra: &str) -> Config {
        Config::from_json(format!(
            r#"{{"providers":{{"p":{{"issuer":"iss","audiences":["api"],{provider_extra}
                 "remote_jwks":{{"http_uri":{{"uri":"http://h/jwks","cluster":"c"}}}}}}}},
               "rules":[{{"match":{{"prefix":"/"}},"requires":{{"provider_name":"p"}}}}]{extra}}}"#
        ).as_bytes())
        .expect("config")
    }

    fn run_with(c: &Config, keys: &dyn KeyStore, method: &str, headers: &[(&str, &str)]) -> Decision {
        let hs: Vec<(String, Vec<u8>)> = headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
        decide(c, keys, &Request { method, path: b"/x", headers: &hs }, NOW, true, &mut TokenCache::new(0))
    }

    #[test]
    fn modes_cors_audit_session() {
        let k = keys();
        let cors = config_with(r#","bypass_cors_preflight":true"#, "");
        let pre = [("origin", "https://a"), ("access-control-request-method", "GET")];
        assert!(matches!(run_with(&cors, &k, "OPTIONS", &pre), Decision::Bypass));
        assert!(matches!(run_with(&cors, &k, "OPTIONS", &pre[..1]), Decision::Deny(_)), "not a preflight");
        assert!(matches!(run_with(&config(), &k, "OPTIONS", &pre), Decision::Deny(_)), "off by default");

        let audit = config_with(r#","audit_mode":true"#, "");
        let Decision::Audited(d) = run_with(&audit, &k, "GET", &[("authorization", "Bearer a.b.c")]) else { panic!("audited") };
        assert_eq!(d.code, "bad_signature");
        let m = marks(&audit, &Decision::Audited(d));
        assert_eq!(m.verdict, Some("false"));
        assert_eq!(m.headers, vec![("x-jwt-verified".into(), "false".into()), ("x-jwt-reason".into(), "bad_signature".into())]);

        let session = config_with(r#","jwt_or_session":{"cookie":"sid"}"#, "");
        assert!(matches!(run_with(&session, &k, "GET", &[("cookie", "a=1; sid=xyz")]), Decision::Session));
        assert!(matches!(run_with(&session, &k, "GET", &[("cookie", "sid=")]), Decision::Deny(_)));
        let bad = [("cookie", "sid=xyz"), ("authorization", "Bearer a.b.c")];
        assert!(matches!(run_with(&session, &k, "GET", &bad), Decision::Deny(_)), "invalid JWT still refused");
    }

    #[test]
    fn claim_headers_and_payload() {
        let c = config_with("", r#""claim_to_headers":[{"header_name":"x-sub","claim_name":"sub"},{"header_name":"x-role","claim_name":"user_context.role"}],"forward_payload_header":"x-jwt-payload","#);
        let t = sign(
            &json!({"alg":"EdDSA","kid":"k1"}),
            &json!({"iss":"iss","aud":"api","exp":NOW+60,"sub":"alice","user_context":{"role":"admin"}}),
            &signing_key(1),
        );
        let d = run_with(&c, &keys(), "GET", &[("authorization", &format!("Bearer {t}"))]);
        let m = marks(&c, &d);
        let payload = t.split('.').nth(1).unwrap_or_default().to_string();
        assert_eq!(m.verdict, Some("true"));
        assert_eq!(
            m.headers,
            vec![
                ("x-jwt-verified".into(), "true".into()),
                ("x-sub".into(), "alice".into()),
                ("x-role".into(), "admin".into()),
                ("x-jwt-payload".into(), payload),
            ]
        );
        for h in ["x-jwt-verified", "x-jwt-reason", "x-sub", "x-role", "x-jwt-payload"] {
            assert!(c.owned_headers.iter().any(|o| o == h), "{h} is stripped from requests");
        }
    }

    struct Revoking<'a> {
        keys: Keys,
        state: &'a dyn Fn() -> RevocationState<'static>,
    }
    impl KeyStore for Revoking<'_> {
        fn keys(&self, p: usize) -> KeyState<'_> {
            self.keys.keys(p)
        }
        fn can_refetch(&self, _: usize) -> bool {
            false
        }
        fn revocation(&self) -> RevocationState<'_> {
            (self.state)()
        }
    }

    #[test]
    fn revocation_policy() {
        let list: &'static RevocationList =
            Box::leak(Box::new(RevocationList::parse(br#"{"jti":["bad"],"sub":["mallory"]}"#, 1024).expect("list")));
        let tok = |jti: &str, sub: &str| {
            let t = sign(&json!({"alg":"EdDSA","kid":"k1"}), &json!({"iss":"iss","aud":"api","exp":NOW+60,"jti":jti,"sub":sub}), &signing_key(1));
            format!("Bearer {t}")
        };
        let deny = config_with(r#","revocation":{"http_uri":{"uri":"http://r/list","cluster":"r"}}"#, "");
        let allow = config_with(r#","revocation":{"http_uri":{"uri":"http://r/list","cluster":"r"},"on_stale":"allow"}"#, "");
        let st = |c: &Config, state: &dyn Fn() -> RevocationState<'static>, t: &str| {
            status(&run_with(c, &Revoking { keys: keys(), state }, "GET", &[("authorization", t)]))
        };
        let usable = || RevocationState::Usable(list);
        assert_eq!(st(&deny, &usable, &tok("ok", "alice")), 200);
        assert_eq!(st(&deny, &usable, &tok("bad", "alice")), 401);
        assert_eq!(st(&deny, &usable, &tok("ok", "mallory")), 401);
        let stale = || RevocationState::TooStale(Some(list));
        assert_eq!(st(&deny, &stale, &tok("ok", "alice")), 503, "fail closed");
        assert_eq!(st(&allow, &stale, &tok("ok", "alice")), 200, "fail open");
        assert_eq!(st(&allow, &stale, &tok("bad", "alice")), 401, "still honours the last list");
        let loading = || RevocationState::Loading;
        assert_eq!(st(&deny, &loading, &tok("ok", "alice")), 0, "waits at cold start");
    }

    #[test]
    fn token_cache_never_skips_what_can_change() {
        let c = config();
        let mut cache = TokenCache::new(16);
        let t = sign(&json!({"alg":"EdDSA","kid":"k1"}), &json!({"iss":"iss","aud":"api","exp":NOW+60}), &signing_key(1));
        let hs = vec![("authorization".to_string(), format!("Bearer {t}").into_bytes())];
        let req = Request { method: "GET", path: b"/x", headers: &hs };
        let go = |keys: &Keys, now: i64, cache: &mut TokenCache| decide(&c, keys, &req, now, false, cache);
        let k = keys();
        assert!(matches!(go(&k, NOW, &mut cache), Decision::Verified { cached: false, .. }));
        assert!(matches!(go(&k, NOW, &mut cache), Decision::Verified { cached: true, .. }));
        assert_eq!((cache.hits, cache.misses), (1, 1));
        // Time moves on: the hit re-checks exp.
        assert_eq!(status(&go(&k, NOW + 3600, &mut cache)), 401);
        // The key leaves the key set: the hit is not used.
        let rotated = Keys {
            set: Some(KeySet::parse(
                format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k2","x":"{}"}}]}}"#, x_of(&signing_key(2))).as_bytes(),
                1 << 16,
            ).expect("jwks")),
            refetch: false,
        };
        assert_eq!(status(&go(&rotated, NOW, &mut cache)), 401);
        // Same kid, different key bytes: not used either.
        let swapped = Keys {
            set: Some(KeySet::parse(
                format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{}"}}]}}"#, x_of(&signing_key(2))).as_bytes(),
                1 << 16,
            ).expect("jwks")),
            refetch: false,
        };
        assert!(matches!(go(&k, NOW, &mut cache), Decision::Verified { .. }));
        assert_eq!(status(&go(&swapped, NOW, &mut cache)), 401);
    }

    #[test]
    fn error_description_is_a_safe_quoted_string() {
        let c = config();
        let d = deny_invalid(&c, "bad \"quote\" \\ and \u{7f} ctl", "x");
        let h = d.www_authenticate.unwrap_or_default();
        assert!(h.ends_with("error_description=\"bad quote  and  ctl\""), "{h}");
    }
}
