//! Fixtures and *independent* oracles shared by the edge-jwt fuzz targets.
//!
//! The oracles here re-state what the filter promises (docs, RFCs) without
//! calling the code under test: a strict base64url decoder written from
//! RFC 4648 §5, a unique-member JSON object reader, a claims model, and an
//! Ed25519 check straight through ed25519-dalek. A target then compares the
//! filter's answer with the oracle's instead of only waiting for a panic.
//!
//! Known, already reported findings can be switched off for long runs with
//! `EDGE_JWT_FUZZ_ALLOW=name[,name...]` (see [`allowed`]); by default every
//! oracle is enforced.
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use edge_jwt::claims::ClaimPolicy;
use edge_jwt::jwks::KeySet;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

/// "Now" for every claims check, Unix seconds (2025-10-09).
pub const NOW: i64 = 1_760_000_000;
/// The filter's default `max_token_bytes`.
pub const MAX_TOKEN: usize = 8192;
pub const ISSUER: &str = "https://issuer.example";
pub const AUDIENCES: [&str; 2] = ["api", "web"];
pub const SKEW: i64 = 60;
pub const MAX_LIFETIME: i64 = 86_400;
/// 9999-12-31T23:59:59Z, the documented upper bound of a NumericDate.
pub const MAX_DATE: i64 = 253_402_300_799;

/// The three fixed signers: two in the key set, one attacker outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    K1,
    K2,
    Attacker,
}

impl Who {
    pub fn seed(self) -> [u8; 32] {
        match self {
            Who::K1 => [0x11; 32],
            Who::K2 => [0x22; 32],
            Who::Attacker => [0x33; 32],
        }
    }

    /// The `kid` this key has in the set (the attacker claims to be `k1`).
    pub fn kid(self) -> &'static str {
        match self {
            Who::K1 | Who::Attacker => "k1",
            Who::K2 => "k2",
        }
    }

    pub fn signing_key(self) -> &'static SigningKey {
        static KEYS: OnceLock<[SigningKey; 3]> = OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            [
                SigningKey::from_bytes(&Who::K1.seed()),
                SigningKey::from_bytes(&Who::K2.seed()),
                SigningKey::from_bytes(&Who::Attacker.seed()),
            ]
        });
        match self {
            Who::K1 => &keys[0],
            Who::K2 => &keys[1],
            Who::Attacker => &keys[2],
        }
    }

    pub fn verifying_key(self) -> VerifyingKey {
        self.signing_key().verifying_key()
    }

    /// Which key of the set a `kid` names, if any.
    pub fn by_kid(kid: &str) -> Option<Who> {
        match kid {
            "k1" => Some(Who::K1),
            "k2" => Some(Who::K2),
            _ => None,
        }
    }
}

/// The fixed JWKS: `k1` and `k2`, both Ed25519.
pub fn jwks_json() -> String {
    format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","use":"sig","alg":"EdDSA","x":"{}"}},{{"kty":"OKP","crv":"Ed25519","kid":"k2","x":"{}"}}],"cache_max_age":3600}}"#,
        b64url_encode(Who::K1.verifying_key().as_bytes()),
        b64url_encode(Who::K2.verifying_key().as_bytes()),
    )
}

pub fn keyset() -> &'static KeySet {
    static SET: OnceLock<KeySet> = OnceLock::new();
    SET.get_or_init(|| {
        let set = KeySet::parse(jwks_json().as_bytes(), 65536).expect("fixed JWKS parses");
        assert_eq!(set.keys.len(), 2, "both fixed keys kept");
        set
    })
}

/// The fixed policy: issuer, two audiences, 60 s skew, `exp` required,
/// lifetime at most a day.
pub fn policy() -> ClaimPolicy {
    ClaimPolicy {
        issuer: Some(ISSUER.into()),
        audiences: AUDIENCES.iter().map(|s| s.to_string()).collect(),
        clock_skew_seconds: SKEW,
        require_expiration: true,
        max_lifetime_seconds: Some(MAX_LIFETIME),
    }
}

/// `b64(header).b64(payload).b64(sig)` signed by `who`.
pub fn sign_token(header: &[u8], payload: &[u8], who: Who) -> Vec<u8> {
    let input = format!("{}.{}", b64url_encode(header), b64url_encode(payload));
    let sig = who.signing_key().sign(input.as_bytes());
    format!("{input}.{}", b64url_encode(&sig.to_bytes())).into_bytes()
}

/// Whether a known finding's oracle is switched off by `EDGE_JWT_FUZZ_ALLOW`.
pub fn allowed(name: &str) -> bool {
    static ALLOW: OnceLock<Vec<String>> = OnceLock::new();
    ALLOW
        .get_or_init(|| {
            std::env::var("EDGE_JWT_FUZZ_ALLOW")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|a| a == name || a == "all")
}

// ---------- strict base64url (RFC 4648 §5, RFC 7515 §2), written afresh ----------

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn sextet(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

pub fn is_b64url_char(c: u8) -> bool {
    sextet(c).is_some()
}

pub fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// No padding, no whitespace, URL-safe alphabet only, and unused trailing
/// bits zero: exactly one encoding per byte string.
pub fn b64url_decode_strict(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = chunk.len() - 1;
        // The bits below the last kept byte must be zero (canonical form).
        let unused_mask = match keep {
            3 => 0,
            2 => 0xFF,
            1 => 0xFFFF,
            _ => return None,
        };
        if n & unused_mask != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

// ---------- JSON object with unique member names ----------

/// Top-level members in document order, duplicates kept.
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The bytes as one JSON object (nothing after it but whitespace) whose
/// top-level member names are unique; `None` otherwise.
pub fn unique_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    let Members(members) = serde_json::from_slice(bytes).ok()?;
    let mut seen = HashSet::new();
    if !members.iter().all(|(k, _)| seen.insert(k.clone())) {
        return None;
    }
    Some(members.into_iter().collect())
}

// ---------- claims model (RFC 7519 §4.1, docs/CONFIG.md) ----------

/// A NumericDate: a JSON number in [0, 9999-12-31], fractions truncated.
/// `Err` for anything else (strings, negatives, too large, non-numbers).
fn date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    let Some(v) = claims.get(name) else { return Ok(None) };
    let Value::Number(n) = v else { return Err(format!("{name} not a number")) };
    let secs = if let Some(i) = n.as_i64() {
        i
    } else if n.is_u64() {
        return Err(format!("{name} too large"));
    } else {
        let f = n.as_f64().ok_or_else(|| format!("{name} not f64"))?;
        if !(f >= 0.0 && f <= MAX_DATE as f64) {
            return Err(format!("{name} out of range"));
        }
        f.trunc() as i64
    };
    if secs < 0 || secs > MAX_DATE {
        return Err(format!("{name} out of range"));
    }
    Ok(Some(secs))
}

/// Whether the claims pass `policy` at `now`; the `exp` on success.
pub fn claims_model(claims: &Map<String, Value>, p: &ClaimPolicy, now: i64) -> Result<Option<i64>, String> {
    // StringOrURI claims are strings; `aud` is one string or an array of them.
    for name in ["iss", "sub", "jti"] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(format!("{name} not a string"));
        }
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => return Err("aud not a string or strings".into()),
    }
    let exp = date(claims, "exp")?;
    let nbf = date(claims, "nbf")?;
    let iat = date(claims, "iat")?;
    let skew = p.clock_skew_seconds;
    match exp {
        None if p.require_expiration => return Err("no exp".into()),
        Some(e) if i128::from(now) > i128::from(e) + i128::from(skew) => return Err("expired".into()),
        _ => {}
    }
    if nbf.is_some_and(|n| i128::from(n) > i128::from(now) + i128::from(skew)) {
        return Err("nbf in the future".into());
    }
    if iat.is_some_and(|i| i128::from(i) > i128::from(now) + i128::from(skew)) {
        return Err("iat in the future".into());
    }
    if let Some(max) = p.max_lifetime_seconds {
        let Some(e) = exp else { return Err("lifetime needs exp".into()) };
        if i128::from(e) - i128::from(iat.unwrap_or(now)) > i128::from(max) {
            return Err("lifetime too long".into());
        }
    }
    if let Some(want) = &p.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
            return Err("issuer".into());
        }
    }
    if !p.audiences.is_empty() {
        let listed = |s: &str| p.audiences.iter().any(|a| a == s);
        let ok = match claims.get("aud") {
            Some(Value::String(s)) => listed(s),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).any(listed),
            _ => false,
        };
        if !ok {
            return Err("audience".into());
        }
    }
    Ok(exp)
}

// ---------- compact JWS structure, restated ----------

/// What a structurally acceptable token (steps 1–4) looks like, restated
/// from the filter's documentation: at most `max` bytes, exactly three
/// dot-separated parts, a non-empty strict-base64url header that is a JSON
/// object with unique members, `alg` "EdDSA" or "Ed25519", no `crit`, no
/// `enc`, `kid` absent or a string, a payload of base64url characters, and
/// a signature of exactly 64 bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape<'t> {
    pub kid: Option<String>,
    pub signing_input: &'t [u8],
    pub payload_b64: &'t [u8],
    pub signature: [u8; 64],
}

pub fn shape_model(token: &[u8], max: usize) -> Option<Shape<'_>> {
    if token.len() > max {
        return None;
    }
    let parts: Vec<&[u8]> = token.split(|&b| b == b'.').collect();
    let [h, p, s] = parts.as_slice() else { return None };
    if h.is_empty() {
        return None;
    }
    let signature: [u8; 64] = b64url_decode_strict(s)?.try_into().ok()?;
    let header = unique_object(&b64url_decode_strict(h)?)?;
    if header.contains_key("crit") || header.contains_key("enc") {
        return None;
    }
    if !matches!(header.get("alg").and_then(Value::as_str), Some("EdDSA" | "Ed25519")) {
        return None;
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return None,
    };
    if !p.iter().all(|&c| is_b64url_char(c)) {
        return None;
    }
    Some(Shape { kid, signing_input: &token[..h.len() + 1 + p.len()], payload_b64: p, signature })
}

/// Strict Ed25519 verification straight through ed25519-dalek.
pub fn dalek_verifies(vk: &VerifyingKey, msg: &[u8], sig: &[u8; 64]) -> bool {
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig)).is_ok()
}

/// Everything a token must satisfy for `verify` to accept it against the
/// fixed key set and policy: the shape, a `kid` naming k1 or k2 (two keys,
/// so a `kid` is required), a strict signature by that key, a payload that
/// is a unique-member object, and claims the model accepts. Returns the
/// claims and `exp`, or why not.
pub fn verify_model(token: &[u8]) -> Result<(Map<String, Value>, Option<i64>), String> {
    let shape = shape_model(token, MAX_TOKEN).ok_or("shape")?;
    let who = shape.kid.as_deref().and_then(Who::by_kid).ok_or("kid")?;
    if !dalek_verifies(&who.verifying_key(), shape.signing_input, &shape.signature) {
        return Err("signature".into());
    }
    let claims = b64url_decode_strict(shape.payload_b64)
        .and_then(|raw| unique_object(&raw))
        .ok_or("payload")?;
    let exp = claims_model(&claims, &policy(), NOW)?;
    Ok((claims, exp))
}

/// Cheap 64-bit mixer for deriving values from input bytes.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

