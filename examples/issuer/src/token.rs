//! Claims and compact JWS (EdDSA) signing, shared by `mint` and `POST /token`.

use anyhow::{anyhow, bail, Result};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ed25519_dalek::{Signer as _, SigningKey};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::keystore::{Key, KeySel};

pub const DEFAULT_TTL: i64 = 900;
pub const DEFAULT_AUD: &str = "api.demo.local";
pub const DEFAULT_SUB: &str = "demo-user";
pub const DEFAULT_SCOPE: &str = "read";

/// A string or a list of strings; lets `aud`/`scope` be given either way.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// What a token should contain. Every field is optional and defaults as
/// documented; this is also the `POST /token` body, so unknown fields are an
/// error rather than silently ignored (a typo would otherwise go unnoticed).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub sub: Option<String>,
    pub scope: Option<OneOrMany>,
    pub aud: Option<OneOrMany>,
    pub ttl: Option<i64>,
    pub nbf_offset: Option<i64>,
    pub user_context: Option<Value>,
    pub jti: Option<String>,
    pub edge_cacheable: Option<bool>,
    pub key: Option<KeySel>,
    pub no_kid: Option<bool>,
    pub extra_claims: Option<Map<String, Value>>,
}

impl TokenRequest {
    pub fn ttl(&self) -> i64 {
        self.ttl.unwrap_or(DEFAULT_TTL)
    }

    /// Builds the JWT payload at time `now`; `extra_claims` are applied last.
    pub fn claims(&self, issuer: &str, now: i64) -> Result<Map<String, Value>> {
        let sub = self.sub.as_deref().unwrap_or(DEFAULT_SUB);
        let aud = match &self.aud {
            None => vec![DEFAULT_AUD.to_string()],
            Some(OneOrMany::One(a)) => vec![a.clone()],
            Some(OneOrMany::Many(a)) => a.clone(),
        };
        let scope = match &self.scope {
            None => DEFAULT_SCOPE.to_string(),
            Some(OneOrMany::One(s)) => s.clone(),
            Some(OneOrMany::Many(s)) => s.join(" "),
        };
        let exp = add(now, self.ttl(), "ttl")?;
        let user_context = match &self.user_context {
            Some(v) => v.clone(),
            None => json!({"id": sub, "role": "user", "features": []}),
        };
        let jti = match &self.jti {
            Some(j) => j.clone(),
            None => random_jti()?,
        };
        let mut c = Map::new();
        c.insert("iss".into(), json!(issuer));
        c.insert("aud".into(), json!(aud));
        c.insert("sub".into(), json!(sub));
        c.insert("iat".into(), json!(now));
        c.insert("exp".into(), json!(exp));
        if let Some(off) = self.nbf_offset {
            c.insert("nbf".into(), json!(add(now, off, "nbf_offset")?));
        }
        c.insert("jti".into(), json!(jti));
        c.insert("scope".into(), json!(scope));
        c.insert(
            "edge_cacheable".into(),
            json!(self.edge_cacheable.unwrap_or(false)),
        );
        c.insert("user_context".into(), user_context);
        if let Some(extra) = &self.extra_claims {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        Ok(c)
    }
}

fn add(now: i64, delta: i64, what: &str) -> Result<i64> {
    now.checked_add(delta)
        .ok_or_else(|| anyhow!("{what} {delta} is out of range"))
}

/// 16 random bytes as 32 hex digits.
pub fn random_jti() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow!("OS random generator failed: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Signs many tokens with one key; the header is encoded once because
/// `mint --count` may produce tens of thousands of tokens.
pub struct Signer {
    pub kid: String,
    header_b64: String,
    key: SigningKey,
}

impl Signer {
    pub fn new(key: &Key, with_kid: bool) -> Result<Signer> {
        let header = if with_kid {
            format!(
                r#"{{"alg":"EdDSA","typ":"JWT","kid":{}}}"#,
                serde_json::to_string(&key.kid)?
            )
        } else {
            r#"{"alg":"EdDSA","typ":"JWT"}"#.to_string()
        };
        Ok(Signer {
            kid: key.kid.clone(),
            header_b64: URL_SAFE_NO_PAD.encode(header),
            key: key.signing.clone(),
        })
    }

    /// Compact JWS: b64(header).b64(payload).b64(signature).
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String> {
        let payload = serde_json::to_vec(claims)?;
        let mut out = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 90);
        out.push_str(&self.header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut out);
        let sig = self.key.sign(out.as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut out);
        Ok(out)
    }
}

/// Parses a JSON object given on the command line (`--extra-claims`).
pub fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => bail!("{what} must be a JSON object"),
        Err(e) => bail!("{what} is not valid JSON: {e}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    /// Checks a token against a JWK the way a verifier would; returns (header, claims).
    pub(crate) fn verify_with_jwk(token: &str, jwk: &Value) -> (Value, Value) {
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        let x: [u8; 32] = URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let vk = VerifyingKey::from_bytes(&x).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap()
            .try_into()
            .unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        vk.verify(input.as_bytes(), &Signature::from_bytes(&sig))
            .expect("signature verifies");
        let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        (header, claims)
    }

    fn test_key() -> Key {
        let dir = crate::keystore::tests::tempdir("token");
        let (s, _) = crate::keystore::KeyStore::open(&dir, 1_764_000_000).unwrap();
        let k = s.current.clone();
        std::fs::remove_dir_all(&dir).unwrap();
        k
    }

    #[test]
    fn default_claims_and_header() {
        let key = test_key();
        let signer = Signer::new(&key, true).unwrap();
        let req = TokenRequest::default();
        let now = 1_800_000_000;
        let token = signer
            .sign(&req.claims("https://issuer.demo.local", now).unwrap())
            .unwrap();
        let (h, c) = verify_with_jwk(&token, &key.jwk());
        assert_eq!(h, json!({"alg":"EdDSA","typ":"JWT","kid": key.kid}));
        assert!(token.starts_with(&URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#,
            key.kid
        ))));
        assert_eq!(c["iss"], "https://issuer.demo.local");
        assert_eq!(c["aud"], json!(["api.demo.local"]));
        assert_eq!(c["sub"], "demo-user");
        assert_eq!(c["iat"], now);
        assert_eq!(c["exp"], now + 900);
        assert!(c.get("nbf").is_none());
        assert_eq!(c["scope"], "read");
        assert_eq!(c["edge_cacheable"], false);
        assert_eq!(
            c["user_context"],
            json!({"id":"demo-user","role":"user","features":[]})
        );
        let jti = c["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 32);
        assert!(jti.chars().all(|ch| ch.is_ascii_hexdigit()));
    }

    #[test]
    fn options_negative_ttl_nbf_and_extra_claims() {
        let key = test_key();
        let signer = Signer::new(&key, false).unwrap();
        let req: TokenRequest = serde_json::from_value(json!({
            "sub": "alice", "scope": ["read", "write"], "aud": "a1", "ttl": -60,
            "nbf_offset": 30, "jti": "fixed", "edge_cacheable": true,
            "extra_claims": {"iss": "override", "tenant": "t1"}
        }))
        .unwrap();
        let now = 1_800_000_000;
        let token = signer.sign(&req.claims("https://i", now).unwrap()).unwrap();
        let (h, c) = verify_with_jwk(&token, &key.jwk());
        assert_eq!(h, json!({"alg":"EdDSA","typ":"JWT"}));
        assert_eq!(c["exp"], now - 60);
        assert_eq!(c["nbf"], now + 30);
        assert_eq!(c["aud"], json!(["a1"]));
        assert_eq!(c["scope"], "read write");
        assert_eq!(c["jti"], "fixed");
        assert_eq!(c["edge_cacheable"], true);
        assert_eq!(c["user_context"]["id"], "alice");
        assert_eq!(c["iss"], "override");
        assert_eq!(c["tenant"], "t1");
    }

    #[test]
    fn rejects_bad_requests() {
        assert!(serde_json::from_value::<TokenRequest>(json!({"ttll": 5})).is_err());
        assert!(serde_json::from_value::<TokenRequest>(json!({"ttl": "x"})).is_err());
        assert!(serde_json::from_value::<TokenRequest>(json!({"key": "old"})).is_err());
        let req = TokenRequest {
            ttl: Some(i64::MAX),
            ..Default::default()
        };
        assert!(req.claims("i", 10).is_err());
        assert!(parse_object("[1]", "x").is_err());
        assert!(parse_object("{", "x").is_err());
    }

    #[test]
    fn jtis_are_distinct() {
        let set: std::collections::HashSet<String> =
            (0..1000).map(|_| random_jti().unwrap()).collect();
        assert_eq!(set.len(), 1000);
    }
}
