//! edge-jwt: verifies Ed25519 JWTs inside Envoy as a proxy-wasm filter.
//!
//! Everything but `filter` is plain Rust with no proxy-wasm imports, so it is
//! tested natively; `filter` is the thin host glue compiled only for wasm.

// A panic kills the worker's VM and fails every later request on it, so
// non-test code may not unwrap, expect, panic or index unchecked.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]
pub mod b64;
pub mod cache;
pub mod claim_headers;
pub mod claims;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod extract;
pub mod json;
pub mod jwks;
pub mod revocation;
pub mod token;
pub mod token_cache;

// Compiled for wasm, and type-checked by clippy on any target.
#[cfg(any(target_arch = "wasm32", clippy))]
mod filter;
