//! proxy-wasm glue: thin contexts over the pure core.
mod apply;
mod host;
mod http;
mod metrics;
mod root;
mod state;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(root::Root::new(id)) });
}}
