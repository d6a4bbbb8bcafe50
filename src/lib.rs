//! edge-jwt: verifies Ed25519 JWTs inside Envoy as a proxy-wasm filter.
pub mod placeholder {}
#[cfg(target_arch = "wasm32")]
mod filter;
