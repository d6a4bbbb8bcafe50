//! Arbitrary bytes as a compact JWS: `token::parse` and `token::verify`
//! against two fixed Ed25519 keys and a fixed claim policy.
//!
//! Oracles (besides "no panic"):
//! - `parse` accepts exactly the tokens the restated structural rules
//!   accept (`shape_model`), with the same `kid`;
//! - a `parse` error is also what `verify` answers;
//! - `verify` accepts exactly what `verify_model` accepts (independent
//!   strict base64url, unique-member JSON, dalek `verify_strict`, claims
//!   model), and then returns the same claims and `exp`.
#![no_main]
use edge_jwt::engine::Ring;
use edge_jwt::token::{self, TokenError};
use edge_jwt_fuzz::{keyset, policy, shape_model, verify_model, MAX_TOKEN, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Ring { sets: vec![keyset()] };
    let policy = policy();

    let parsed = token::parse(data, MAX_TOKEN);
    let shape = shape_model(data, MAX_TOKEN);
    match (&parsed, &shape) {
        (Ok(p), Some(s)) => assert_eq!(p.kid, s.kid, "parse: kid differs from the header's"),
        (Err(_), None) => {}
        (Ok(p), None) => panic!("parse accepted a token the structural rules refuse (kid {:?})", p.kid),
        (Err(e), Some(s)) => panic!("parse refused ({e:?}) a structurally valid token (kid {:?})", s.kid),
    }
    if data.len() > MAX_TOKEN {
        assert!(matches!(parsed, Err(TokenError::TooLarge)), "over max_bytes must be TooLarge");
    }

    let got = token::verify(data, MAX_TOKEN, &keys, &policy, NOW);
    if let Err(e) = &parsed {
        assert_eq!(got.as_ref().err(), Some(e), "verify and parse disagree on a parse failure");
    }
    match (&got, verify_model(data)) {
        (Ok(v), Ok((claims, exp))) => {
            assert_eq!(v.claims, claims, "verified claims differ from the payload");
            assert_eq!(v.exp, exp, "verified exp differs from the payload's");
        }
        (Err(e), Err(_)) => {
            let _ = (e.to_string(), e.code());
        }
        (Ok(v), Err(why)) => panic!("verify accepted a token the model refuses ({why}): {v:?}"),
        (Err(e), Ok(_)) => panic!("verify refused ({e:?}) a token the model accepts"),
    }
});
