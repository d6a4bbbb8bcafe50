//! Compact JWS parsing and verification, in the order that spends the least
//! on hostile input (after rust-jwt-simple): size, shape, header, algorithm,
//! key, signature, and only then the payload and its claims.
use crate::b64;
use crate::claims::{ClaimError, ClaimPolicy};
use crate::crypto::PublicKey;
use crate::json;
use serde_json::{Map, Value};
use std::fmt;

/// Base64url length of a 64-byte signature.
const SIG_B64_LEN: usize = 86;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    TooLarge,
    /// Not three non-empty-header dot-separated parts.
    Malformed,
    BadBase64,
    HeaderNotJson,
    /// `crit` present: we understand no extensions, so RFC 7515 §4.1.11
    /// says refuse.
    Crit,
    /// An `enc` member marks a JWE, which this filter never accepts.
    Encrypted,
    AlgMissing,
    AlgNotAllowed,
    BadKid,
    SignatureLength,
    UnknownKid,
    /// No `kid`, and the key set does not hold exactly one key.
    KidRequired,
    NoKeys,
    BadSignature,
    PayloadNotJson,
    Claims(ClaimError),
}

impl TokenError {
    /// Short stable code, used in stats names and logs.
    pub fn code(self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::Malformed | TokenError::BadBase64 => "malformed",
            TokenError::HeaderNotJson => "bad_header",
            TokenError::Crit => "crit",
            TokenError::Encrypted => "jwe",
            TokenError::AlgMissing | TokenError::AlgNotAllowed => "alg",
            TokenError::BadKid => "bad_header",
            TokenError::SignatureLength | TokenError::BadSignature => "bad_signature",
            TokenError::UnknownKid | TokenError::KidRequired => "unknown_kid",
            TokenError::NoKeys => "no_keys",
            TokenError::PayloadNotJson => "bad_payload",
            TokenError::Claims(c) => c.code(),
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::TooLarge => f.write_str("Jwt is too large"),
            TokenError::Malformed => f.write_str("Jwt is not in the form of Header.Payload.Signature"),
            TokenError::BadBase64 => f.write_str("Jwt is not strict base64url"),
            TokenError::HeaderNotJson => f.write_str("Jwt header is an invalid JSON object"),
            TokenError::Crit => f.write_str("Jwt header has crit, which is not supported"),
            TokenError::Encrypted => f.write_str("Jwt is a JWE, which is not supported"),
            TokenError::AlgMissing => f.write_str("Jwt header has no alg"),
            TokenError::AlgNotAllowed => f.write_str("Jwt alg is not allowed"),
            TokenError::BadKid => f.write_str("Jwt kid is not a string"),
            TokenError::SignatureLength => f.write_str("Jwt signature is not 64 bytes"),
            TokenError::UnknownKid => f.write_str("Jwks doesn't have key to match kid"),
            TokenError::KidRequired => f.write_str("Jwt has no kid and the key set has several keys"),
            TokenError::NoKeys => f.write_str("Jwks is not available"),
            TokenError::BadSignature => f.write_str("Jwt verification fails"),
            TokenError::PayloadNotJson => f.write_str("Jwt payload is an invalid JSON object"),
            TokenError::Claims(c) => c.fmt(f),
        }
    }
}

impl From<ClaimError> for TokenError {
    fn from(e: ClaimError) -> Self {
        TokenError::Claims(e)
    }
}

/// A token that passed the structural checks but not yet the signature.
#[derive(Debug)]
pub struct Parsed<'t> {
    pub kid: Option<String>,
    signing_input: &'t [u8],
    payload_b64: &'t [u8],
    signature: [u8; 64],
}

/// Steps 1–4: size cap, three strict base64url parts, a unique-member
/// header with an allowed `alg`, no `crit`, no `enc`.
pub fn parse(token: &[u8], max_bytes: usize) -> Result<Parsed<'_>, TokenError> {
    if token.len() > max_bytes {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.splitn(3, |&b| b == b'.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    // A fourth dot lands in `s`; base64url has no '.', so the decode refuses it.
    if h.is_empty() || s.len() != SIG_B64_LEN {
        return Err(if s.contains(&b'.') || h.is_empty() {
            TokenError::Malformed
        } else {
            TokenError::SignatureLength
        });
    }
    let signature = b64::decode_array::<64>(s).ok_or(TokenError::BadBase64)?;
    let header_bytes = b64::decode(h).ok_or(TokenError::BadBase64)?;
    let header = json::parse_object(&header_bytes).map_err(|_| TokenError::HeaderNotJson)?;
    if header.contains_key("crit") {
        return Err(TokenError::Crit);
    }
    if header.contains_key("enc") {
        return Err(TokenError::Encrypted);
    }
    match header.get("alg") {
        None => return Err(TokenError::AlgMissing),
        // RFC 8037 "EdDSA", and the fully specified "Ed25519" (RFC 9864).
        Some(Value::String(a)) if a == "EdDSA" || a == "Ed25519" => {}
        Some(_) => return Err(TokenError::AlgNotAllowed),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(TokenError::BadKid),
    };
    // Payload characters are checked now; decoding waits for the signature.
    if !p.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
        return Err(TokenError::BadBase64);
    }
    let signing_input = token.get(..h.len() + 1 + p.len()).ok_or(TokenError::Malformed)?;
    Ok(Parsed { kid, signing_input, payload_b64: p, signature })
}

/// Where keys come from: step 5 picks by `kid`, and a named `kid` never
/// falls back to another key.
pub trait KeyLookup {
    fn by_kid(&self, kid: &str) -> Option<&PublicKey>;
    /// The single key when exactly one exists, else `None`.
    fn sole_key(&self) -> Option<&PublicKey>;
    fn is_empty(&self) -> bool;
}

impl<'t> Parsed<'t> {
    /// Step 5: the key named by `kid`, or the only key when there is no
    /// `kid`. A named `kid` never falls back to another key.
    pub fn select_key<'k>(&self, keys: &'k dyn KeyLookup) -> Result<&'k PublicKey, TokenError> {
        if keys.is_empty() {
            return Err(TokenError::NoKeys);
        }
        match &self.kid {
            Some(kid) => keys.by_kid(kid).ok_or(TokenError::UnknownKid),
            None => keys.sole_key().ok_or(TokenError::KidRequired),
        }
    }

    /// Steps 5 and 6: choose the key, then strict Ed25519. Returns the key.
    pub fn verify_signature<'k>(&self, keys: &'k dyn KeyLookup) -> Result<&'k PublicKey, TokenError> {
        let key = self.select_key(keys)?;
        if key.verify(self.signing_input, &self.signature) {
            Ok(key)
        } else {
            Err(TokenError::BadSignature)
        }
    }

    /// Step 7 input: the payload as a unique-member JSON object. Call only
    /// after `verify_signature` succeeded.
    pub fn claims(&self) -> Result<Map<String, Value>, TokenError> {
        let raw = b64::decode(self.payload_b64).ok_or(TokenError::BadBase64)?;
        json::parse_object(&raw).map_err(|_| TokenError::PayloadNotJson)
    }
}

/// A verified token: its claims and `exp`.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub exp: Option<i64>,
}

/// The whole order, 1 to 7.
pub fn verify(
    token: &[u8],
    max_bytes: usize,
    keys: &dyn KeyLookup,
    policy: &ClaimPolicy,
    now: i64,
) -> Result<Verified, TokenError> {
    let parsed = parse(token, max_bytes)?;
    parsed.verify_signature(keys)?;
    let claims = parsed.claims()?;
    let exp = policy.check(&claims, now)?;
    Ok(Verified { claims, exp })
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Signing for tests only; the filter itself never holds a private key.
    use crate::b64;
    use ed25519_dalek::{Signer, SigningKey};

    pub fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub fn x_of(k: &SigningKey) -> String {
        b64::encode(k.verifying_key().as_bytes())
    }

    pub fn sign_raw(header: &[u8], payload: &[u8], k: &SigningKey) -> String {
        let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
        let sig = k.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(&sig.to_bytes()))
    }

    pub fn sign(header: &serde_json::Value, payload: &serde_json::Value, k: &SigningKey) -> String {
        sign_raw(header.to_string().as_bytes(), payload.to_string().as_bytes(), k)
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::jwks::KeySet;
    use serde_json::json;

    const NOW: i64 = 1_760_000_000;

    struct Set(KeySet);
    impl KeyLookup for Set {
        fn by_kid(&self, kid: &str) -> Option<&PublicKey> {
            self.0.find(kid)
        }
        fn sole_key(&self) -> Option<&PublicKey> {
            match self.0.keys.as_slice() {
                [only] => Some(&only.key),
                _ => None,
            }
        }
        fn is_empty(&self) -> bool {
            self.0.keys.is_empty()
        }
    }

    fn keyset(kids: &[(&str, u8)]) -> Set {
        let keys: Vec<String> = kids
            .iter()
            .map(|(kid, seed)| {
                format!(
                    r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"{}"}}"#,
                    x_of(&signing_key(*seed))
                )
            })
            .collect();
        let doc = format!(r#"{{"keys":[{}]}}"#, keys.join(","));
        Set(KeySet::parse(doc.as_bytes(), 1 << 16).expect("jwks"))
    }

    fn claims() -> serde_json::Value {
        json!({"iss":"https://issuer.example","aud":["api"],"sub":"u","iat":NOW,"exp":NOW+900,
               "scope":"read write","user_context":{"id":"u","role":"admin","features":["a"]}})
    }

    fn policy() -> ClaimPolicy {
        ClaimPolicy {
            issuer: Some("https://issuer.example".into()),
            audiences: vec!["api".into()],
            ..ClaimPolicy::default()
        }
    }

    fn check(token: &str, keys: &Set) -> Result<Verified, TokenError> {
        verify(token.as_bytes(), 8192, keys, &policy(), NOW)
    }

    #[test]
    fn valid_tokens() {
        let keys = keyset(&[("k1", 1), ("k2", 2)]);
        let t = sign(&json!({"alg":"EdDSA","kid":"k1","typ":"JWT"}), &claims(), &signing_key(1));
        let v = check(&t, &keys).expect("valid");
        assert_eq!(v.exp, Some(NOW + 900));
        let t2 = sign(&json!({"alg":"Ed25519","kid":"k2"}), &claims(), &signing_key(2));
        assert!(check(&t2, &keys).is_ok(), "next key and fully-specified alg");
        let single = keyset(&[("only", 3)]);
        let nokid = sign(&json!({"alg":"EdDSA"}), &claims(), &signing_key(3));
        assert!(check(&nokid, &single).is_ok(), "no kid with exactly one key");
    }

    #[test]
    fn hostile_tokens() {
        use TokenError::*;
        let keys = keyset(&[("k1", 1), ("k2", 2)]);
        let k1 = signing_key(1);
        let good = sign(&json!({"alg":"EdDSA","kid":"k1"}), &claims(), &k1);
        let (head, rest) = good.split_once('.').unwrap_or_default();
        let (payload, sig) = rest.split_once('.').unwrap_or_default();
        let tampered_payload = b64::encode(
            json!({"iss":"https://issuer.example","aud":["api"],"sub":"admin","exp":NOW+900})
                .to_string()
                .as_bytes(),
        );
        let none_header = b64::encode(br#"{"alg":"none","kid":"k1"}"#);
        let cases: Vec<(&str, String, TokenError)> = vec![
            ("tampered", format!("{head}.{tampered_payload}.{sig}"), BadSignature),
            ("alg none empty sig", format!("{none_header}.{payload}."), SignatureLength),
            ("alg none with sig", format!("{none_header}.{payload}.{sig}"), AlgNotAllowed),
            ("two parts", format!("{head}.{payload}"), Malformed),
            ("four parts", format!("{good}.x"), Malformed),
            ("trailing dot", format!("{good}."), Malformed),
            ("padding", format!("{head}=.{payload}.{sig}"), BadBase64),
            ("std alphabet", format!("{head}.{payload}+.{sig}"), BadBase64),
            ("whitespace", format!("{head}.{payload}.{} ", &sig[..85]), BadBase64),
            ("sig 63 bytes", format!("{head}.{payload}.{}", b64::encode(&[1; 63])), SignatureLength),
            ("sig 65 bytes", format!("{head}.{payload}.{}", b64::encode(&[1; 65])), SignatureLength),
            ("dots only", ".".repeat(1000), Malformed),
            ("empty", String::new(), Malformed),
            ("huge", "a".repeat(9000), TooLarge),
            ("kid names key B, signed by A", sign(&json!({"alg":"EdDSA","kid":"k2"}), &claims(), &k1), BadSignature),
            ("unknown kid", sign(&json!({"alg":"EdDSA","kid":"k9"}), &claims(), &k1), UnknownKid),
            ("no kid, two keys", sign(&json!({"alg":"EdDSA"}), &claims(), &k1), KidRequired),
            ("kid number", sign(&json!({"alg":"EdDSA","kid":1}), &claims(), &k1), BadKid),
            ("alg missing", sign(&json!({"kid":"k1"}), &claims(), &k1), AlgMissing),
            ("alg RS256", sign(&json!({"alg":"RS256","kid":"k1"}), &claims(), &k1), AlgNotAllowed),
            ("alg HS256", sign(&json!({"alg":"HS256","kid":"k1"}), &claims(), &k1), AlgNotAllowed),
            ("alg lower", sign(&json!({"alg":"eddsa","kid":"k1"}), &claims(), &k1), AlgNotAllowed),
            ("alg array", sign(&json!({"alg":["EdDSA"],"kid":"k1"}), &claims(), &k1), AlgNotAllowed),
            ("crit", sign(&json!({"alg":"EdDSA","kid":"k1","crit":["exp"]}), &claims(), &k1), Crit),
            ("crit empty", sign(&json!({"alg":"EdDSA","kid":"k1","crit":[]}), &claims(), &k1), Crit),
            ("crit null", sign(&json!({"alg":"EdDSA","kid":"k1","crit":null}), &claims(), &k1), Crit),
            ("enc", sign(&json!({"alg":"EdDSA","kid":"k1","enc":"A128GCM"}), &claims(), &k1), Encrypted),
            ("dup alg", sign_raw(br#"{"alg":"HS256","alg":"EdDSA","kid":"k1"}"#, claims().to_string().as_bytes(), &k1), HeaderNotJson),
            ("dup kid", sign_raw(br#"{"alg":"EdDSA","kid":"k2","kid":"k1"}"#, claims().to_string().as_bytes(), &k1), HeaderNotJson),
            ("header not json", sign_raw(b"not json", b"{}", &k1), HeaderNotJson),
            ("header not utf8", sign_raw(b"{\"alg\":\"EdDSA\",\"x\":\"\xff\"}", b"{}", &k1), HeaderNotJson),
            ("payload not json", sign_raw(br#"{"alg":"EdDSA","kid":"k1"}"#, b"hello", &k1), PayloadNotJson),
            ("payload array", sign_raw(br#"{"alg":"EdDSA","kid":"k1"}"#, b"[1]", &k1), PayloadNotJson),
            ("dup claim", sign_raw(br#"{"alg":"EdDSA","kid":"k1"}"#, br#"{"sub":"a","sub":"b"}"#, &k1), PayloadNotJson),
            ("expired", sign(&json!({"alg":"EdDSA","kid":"k1"}), &json!({"iss":"https://issuer.example","aud":"api","exp":NOW-3600}), &k1), Claims(ClaimError::Expired)),
            ("wrong aud", sign(&json!({"alg":"EdDSA","kid":"k1"}), &json!({"iss":"https://issuer.example","aud":"other","exp":NOW+60}), &k1), Claims(ClaimError::AudienceMismatch)),
        ];
        for (name, token, want) in cases {
            assert_eq!(check(&token, &keys).err(), Some(want), "{name}");
        }
    }

    /// HS256 "signed" with the public key as HMAC secret: refused at alg,
    /// before any key is touched, whatever the MAC bytes are.
    #[test]
    fn hs256_with_public_key_refused() {
        let keys = keyset(&[("k1", 1)]);
        let header = b64::encode(br#"{"alg":"HS256","kid":"k1"}"#);
        let payload = b64::encode(claims().to_string().as_bytes());
        let mac = b64::encode(&[0xAB; 32]);
        let t = format!("{header}.{payload}.{mac}");
        assert_eq!(check(&t, &keys).err(), Some(TokenError::SignatureLength));
    }

    #[test]
    fn nested_json_bomb_in_header_is_cheap_error() {
        let keys = keyset(&[("k1", 1)]);
        let deep = format!("{{\"alg\":\"EdDSA\",\"x\":{}}}", "[".repeat(5000));
        let t = sign_raw(deep.as_bytes(), b"{}", &signing_key(1));
        assert_eq!(verify(t.as_bytes(), 1 << 20, &keys, &policy(), NOW).err(), Some(TokenError::HeaderNotJson));
    }

    #[test]
    fn empty_key_set() {
        struct Empty;
        impl KeyLookup for Empty {
            fn by_kid(&self, _: &str) -> Option<&PublicKey> { None }
            fn sole_key(&self) -> Option<&PublicKey> { None }
            fn is_empty(&self) -> bool { true }
        }
        let t = sign(&json!({"alg":"EdDSA","kid":"k1"}), &claims(), &signing_key(1));
        assert_eq!(verify(t.as_bytes(), 8192, &Empty, &policy(), NOW).err(), Some(TokenError::NoKeys));
    }
}
