//! Fallible wrappers over proxy-wasm hostcalls. The SDK's convenience
//! methods unwrap host statuses (and decode header values as UTF-8 with a
//! panic), and a panic kills this worker's VM, so the glue uses these.
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::time::UNIX_EPOCH;

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn shared_get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// CAS write; false when another VM wrote first (or the host refused).
pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    hostcalls::set_shared_data(key, Some(value), cas).is_ok()
}

pub fn request_headers() -> Vec<(String, Vec<u8>)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
}

pub fn remove_request_header(name: &str) {
    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
}

pub fn set_request_header(name: &str, value: &str) {
    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value.as_bytes()));
}

pub fn call_response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name).ok().flatten()
}

pub fn call_response_body(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size).ok().flatten()
}

pub fn plugin_config() -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten()
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

pub fn set_property(path: &[&str], value: &[u8]) {
    let _ = hostcalls::set_property(path.to_vec(), Some(value));
}

pub fn send_response(status: u32, headers: &[(&str, &str)], body: &[u8]) {
    let _ = hostcalls::send_http_response(status, headers.to_vec(), Some(body));
}

pub fn resume_request() {
    let _ = hostcalls::resume_http_request();
}

pub fn set_effective_context(id: u32) -> bool {
    hostcalls::set_effective_context(id).is_ok()
}

pub fn set_tick_ms(ms: u64) {
    let _ = hostcalls::set_tick_period(std::time::Duration::from_millis(ms));
}

/// xorshift64*: jitter only, nothing secret.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
