//! edge-jwt: verifies Ed25519 JWTs inside Envoy as a proxy-wasm filter.
//!
//! Everything but `filter` is plain Rust with no proxy-wasm imports, so it is
//! tested natively; `filter` is the thin host glue compiled only for wasm.
pub mod b64;
pub mod cache;
pub mod claims;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod extract;
pub mod json;
pub mod jwks;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod filter;
