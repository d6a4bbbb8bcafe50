//! Structure-aware token fuzzing: the input supplies header and payload
//! JSON bytes, which are base64url-encoded and *really signed* by a fixed
//! key, so the fuzzer gets past the signature into the claims code.
//!
//! Input layout (see fuzz/seeds/token_verify_structured/):
//!   byte 0    control bits
//!             0-1  signer: 0,3 = k1, 1 = k2, 2 = attacker (a key outside the set)
//!             2    0: template header {"alg":..,"typ":"JWT","kid":<signer's kid>}
//!                  1: the raw header bytes from the input
//!             3    template alg: 0 "EdDSA", 1 "Ed25519"
//!             4    tamper: XOR one byte of the finished token
//!             5    template kid names the *other* key of the set
//!             6    template has no kid
//!   bytes 1-2 tamper position (u16 LE, modulo the token length)
//!   byte 3    tamper XOR value (0 counts as 1)
//!   rest      <header bytes> 0x00 <payload bytes>; without a 0x00 all of it is the payload
//!
//! Oracles:
//! - soundness: when `verify` says Ok, the signer is k1 or k2, the token was
//!   not tampered with, the header names the signer's kid with alg
//!   EdDSA/Ed25519 and no crit/enc, dalek's `verify_strict` accepts the
//!   signature, the claims model accepts the payload, and the claims
//!   returned are exactly the payload's;
//! - completeness: Ok exactly when `verify_model` says so;
//! - an untampered, correctly signed token with a matching template header
//!   can only fail on its payload (PayloadNotJson, claims, or TooLarge).
#![no_main]
use edge_jwt::engine::Ring;
use edge_jwt::token::{self, TokenError};
use edge_jwt_fuzz::{
    claims_model, dalek_verifies, keyset, policy, shape_model, sign_token, unique_object, verify_model, Who,
    MAX_TOKEN, NOW,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let [ctl, p0, p1, x, rest @ ..] = data else { return };
    let signer = match ctl & 3 {
        1 => Who::K2,
        2 => Who::Attacker,
        _ => Who::K1,
    };
    let templated = ctl & 4 == 0;
    let tampered = ctl & 0x10 != 0;
    let (raw_header, payload) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let kid_ok = ctl & 0x60 == 0;
    let header: Vec<u8> = if templated {
        let mut h = serde_json::Map::new();
        h.insert("alg".into(), (if ctl & 8 == 0 { "EdDSA" } else { "Ed25519" }).into());
        h.insert("typ".into(), "JWT".into());
        if ctl & 0x40 == 0 {
            let kid = if ctl & 0x20 == 0 {
                signer.kid()
            } else if signer.kid() == "k1" {
                "k2"
            } else {
                "k1"
            };
            h.insert("kid".into(), kid.into());
        }
        serde_json::to_vec(&h).expect("header serializes")
    } else {
        raw_header.to_vec()
    };

    let mut tok = sign_token(&header, payload, signer);
    if tampered {
        let i = usize::from(u16::from_le_bytes([*p0, *p1])) % tok.len();
        tok[i] ^= (*x).max(1);
    }

    let keys = Ring { sets: vec![keyset()] };
    let got = token::verify(&tok, MAX_TOKEN, &keys, &policy(), NOW);

    if let Ok(v) = &got {
        assert_ne!(signer, Who::Attacker, "accepted a token signed by a key outside the set");
        assert!(!tampered, "accepted a tampered token");
        let hdr = unique_object(&header).expect("accepted header is not a unique-member JSON object");
        assert!(
            matches!(hdr.get("alg").and_then(Value::as_str), Some("EdDSA" | "Ed25519")),
            "accepted alg {:?}",
            hdr.get("alg")
        );
        assert!(!hdr.contains_key("crit") && !hdr.contains_key("enc"), "accepted crit/enc");
        assert_eq!(
            hdr.get("kid").and_then(Value::as_str),
            Some(signer.kid()),
            "accepted a kid that is not the signer's"
        );
        let shape = shape_model(&tok, MAX_TOKEN).expect("accepted token has no valid shape");
        assert!(
            dalek_verifies(&signer.verifying_key(), shape.signing_input, &shape.signature),
            "accepted a signature that verify_strict refuses"
        );
        let claims = unique_object(payload).expect("accepted payload is not a unique-member object");
        let exp = claims_model(&claims, &policy(), NOW).expect("accepted claims the model refuses");
        assert_eq!(v.claims, claims);
        assert_eq!(v.exp, exp);
    }

    match (&got, verify_model(&tok)) {
        (Ok(_), Ok(_)) => {}
        (Err(e), Err(_)) => {
            let _ = (e.to_string(), e.code());
        }
        (Ok(_), Err(why)) => panic!("verify accepted what the model refuses: {why}"),
        (Err(e), Ok(_)) => panic!("verify refused ({e:?}) what the model accepts"),
    }

    if templated && kid_ok && !tampered && signer != Who::Attacker {
        match &got {
            Ok(_) | Err(TokenError::PayloadNotJson | TokenError::Claims(_) | TokenError::TooLarge) => {}
            // A payload that is not canonical base64url cannot happen: we encoded it.
            Err(e) => panic!("correctly signed token with a matching header refused: {e:?}"),
        }
        let want_too_large = tok.len() > MAX_TOKEN;
        assert_eq!(matches!(got, Err(TokenError::TooLarge)), want_too_large);
        if !want_too_large {
            assert_eq!(
                matches!(got, Err(TokenError::PayloadNotJson)),
                unique_object(payload).is_none(),
                "PayloadNotJson exactly when the payload is not a unique-member object"
            );
        }
    }
});
