//! Envoy stats through proxy-wasm metrics, defined lazily by name. Envoy
//! shows them under `wasmcustom.`, e.g. `wasmcustom.edge_jwt.<plugin>.allowed`.
//! Counters and gauges are shared by every worker VM of the plugin.
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::BTreeMap;

pub struct Metrics {
    prefix: String,
    ids: BTreeMap<(u32, String), u32>,
}

impl Metrics {
    pub fn new(plugin_name: &str) -> Metrics {
        // Stat names use '.' as separator; keep the plugin name one segment.
        let name: String = plugin_name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
        Metrics { prefix: format!("edge_jwt.{name}."), ids: BTreeMap::new() }
    }

    fn id(&mut self, kind: MetricType, name: &str) -> Option<u32> {
        let key = (kind as u32, name.to_string());
        if let Some(id) = self.ids.get(&key) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, &format!("{}{name}", self.prefix)).ok()?;
        self.ids.insert(key, id);
        Some(id)
    }

    pub fn inc(&mut self, name: &str) {
        if let Some(id) = self.id(MetricType::Counter, name) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    pub fn gauge(&mut self, name: &str, value: u64) {
        if let Some(id) = self.id(MetricType::Gauge, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    pub fn histogram(&mut self, name: &str, value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}
