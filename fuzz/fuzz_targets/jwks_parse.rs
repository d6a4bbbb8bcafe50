//! `KeySet::parse(data, 65536)` against a model of RFC 7517/8037 as the
//! filter documents it.
//!
//! Oracles:
//! - every kept key came from a JWK with kty "OKP" and crv "Ed25519" whose
//!   `x` is strict base64url of exactly 32 bytes, equal to the key's bytes;
//! - kept + skipped = number of entries in `keys`; kept kids are unique and
//!   `find(kid)` returns that key;
//! - the whole result (kept keys in order, error kind, cache hints) equals
//!   an independent model: JWKs with `alg` other than EdDSA/Ed25519, `use`
//!   other than "sig", `key_ops` without "verify", a private `d`, a non-string
//!   kid, or an invalid/weak point are skipped; a repeated kid keeps the first.
#![no_main]
use ed25519_dalek::VerifyingKey;
use edge_jwt::jwks::{JwksError, KeySet};
use edge_jwt_fuzz::b64url_decode_strict;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const MAX: usize = 65536;

#[derive(Debug, PartialEq, Eq)]
enum ModelErr {
    TooLarge,
    NotJson,
    NoKeysArray,
    NoUsableKeys(usize),
}

#[derive(Debug, PartialEq, Eq)]
struct ModelSet {
    keys: Vec<(Option<String>, [u8; 32])>,
    skipped: usize,
    cache_max_age: Option<u64>,
    edge_ttl: Option<u64>,
}

/// A usable Ed25519 verification key: a canonical point, not small order.
fn usable_point(x: [u8; 32]) -> bool {
    VerifyingKey::from_bytes(&x).is_ok_and(|vk| !vk.is_weak() && vk.to_bytes() == x)
}

fn jwk_model(v: &Value) -> Option<(Option<String>, [u8; 32])> {
    let o = v.as_object()?;
    let kid = match o.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return None,
    };
    let s = |name: &str| o.get(name).and_then(Value::as_str);
    if s("kty") != Some("OKP") || s("crv") != Some("Ed25519") {
        return None;
    }
    if o.contains_key("alg") && !matches!(s("alg"), Some("EdDSA" | "Ed25519")) {
        return None;
    }
    if o.contains_key("use") && s("use") != Some("sig") {
        return None;
    }
    if let Some(ops) = o.get("key_ops") {
        let ops = ops.as_array()?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return None;
        }
    }
    if o.contains_key("d") {
        return None;
    }
    let x: [u8; 32] = b64url_decode_strict(s("x")?.as_bytes())?.try_into().ok()?;
    usable_point(x).then_some((kid, x))
}

fn model(data: &[u8]) -> Result<ModelSet, ModelErr> {
    if data.len() > MAX {
        return Err(ModelErr::TooLarge);
    }
    let doc: Map<String, Value> = serde_json::from_slice(data).map_err(|_| ModelErr::NotJson)?;
    let list = doc.get("keys").and_then(Value::as_array).ok_or(ModelErr::NoKeysArray)?;
    let mut keys: Vec<(Option<String>, [u8; 32])> = Vec::new();
    for jwk in list {
        if let Some((kid, x)) = jwk_model(jwk) {
            if kid.is_none() || !keys.iter().any(|(k, _)| *k == kid) {
                keys.push((kid, x));
            }
        }
    }
    if keys.is_empty() {
        return Err(ModelErr::NoUsableKeys(list.len()));
    }
    Ok(ModelSet {
        skipped: list.len() - keys.len(),
        keys,
        cache_max_age: doc.get("cache_max_age").and_then(Value::as_u64),
        edge_ttl: doc.get("edge_ttl").and_then(Value::as_u64),
    })
}

fuzz_target!(|data: &[u8]| {
    let got = KeySet::parse(data, MAX);
    let want = model(data);

    if let Ok(set) = &got {
        // The brief's oracle, stated on its own: each kept key is an
        // OKP/Ed25519 JWK of the document with a 32-byte x equal to the key.
        let doc: Value = serde_json::from_slice(data).expect("kept keys from a non-JSON body");
        let list = doc["keys"].as_array().expect("kept keys without a keys array");
        for k in &set.keys {
            let bytes = k.key.as_bytes();
            let from_doc = list.iter().any(|j| {
                j["kty"] == "OKP"
                    && j["crv"] == "Ed25519"
                    && j["x"]
                        .as_str()
                        .and_then(|x| b64url_decode_strict(x.as_bytes()))
                        .is_some_and(|raw| raw.len() == 32 && raw == bytes)
                    && match &k.kid {
                        Some(kid) => j["kid"] == kid.as_str(),
                        None => j.get("kid").is_none(),
                    }
            });
            assert!(from_doc, "kept key {:?} matches no OKP/Ed25519 JWK with that x", k.kid);
        }
        assert_eq!(set.keys.len() + set.skipped.len(), list.len(), "kept + skipped != keys.len()");
        let mut kids: Vec<&str> = set.kids().collect();
        let n = kids.len();
        kids.sort_unstable();
        kids.dedup();
        assert_eq!(kids.len(), n, "two kept keys share a kid");
        for k in &set.keys {
            if let Some(kid) = &k.kid {
                assert!(set.find(kid) == Some(&k.key), "find({kid:?}) is not the kept key");
            }
        }
        for (_, why) in &set.skipped {
            let _ = why.to_string();
        }
    }

    let got_model = match &got {
        Ok(set) => Ok(ModelSet {
            keys: set.keys.iter().map(|k| (k.kid.clone(), *k.key.as_bytes())).collect(),
            skipped: set.skipped.len(),
            cache_max_age: set.cache_max_age,
            edge_ttl: set.edge_ttl,
        }),
        Err(e) => {
            let _ = e.to_string();
            Err(match e {
                JwksError::TooLarge { .. } => ModelErr::TooLarge,
                JwksError::NotJson(_) => ModelErr::NotJson,
                JwksError::NoKeysArray => ModelErr::NoKeysArray,
                JwksError::NoUsableKeys { skipped } => ModelErr::NoUsableKeys(*skipped),
            })
        }
    };
    assert_eq!(got_model, want, "KeySet::parse differs from the model");
});
