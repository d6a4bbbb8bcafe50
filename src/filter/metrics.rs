//! Envoy stats through proxy-wasm metrics, defined lazily by name. Envoy
//! shows them under `wasmcustom.`, e.g. `wasmcustom.edge_jwt.<plugin>.allowed`.
//! Counters and gauges are shared by every worker VM of the plugin.
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::BTreeMap;

pub struct Metrics {
    prefix: String,
    // Names are static, so lookups on the request path allocate nothing.
    ids: BTreeMap<(u32, &'static str, &'static str), u32>,
}

impl Metrics {
    pub fn new(plugin_name: &str) -> Metrics {
        // Stat names use '.' as separator; keep the plugin name one segment.
        let name: String = plugin_name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
        Metrics { prefix: format!("edge_jwt.{name}."), ids: BTreeMap::new() }
    }

    /// The metric `<name>` or `<name>.<detail>`, defined on first use.
    fn id(&mut self, kind: MetricType, name: &'static str, detail: &'static str) -> Option<u32> {
        let key = (kind as u32, name, detail);
        if let Some(id) = self.ids.get(&key) {
            return Some(*id);
        }
        let full = if detail.is_empty() {
            format!("{}{name}", self.prefix)
        } else {
            format!("{}{name}.{detail}", self.prefix)
        };
        let id = hostcalls::define_metric(kind, &full).ok()?;
        self.ids.insert(key, id);
        Some(id)
    }

    pub fn inc(&mut self, name: &'static str) {
        self.inc_by(name, "");
    }

    /// Counts `<name>.<detail>`, e.g. `denied.expired`.
    pub fn inc_by(&mut self, name: &'static str, detail: &'static str) {
        if let Some(id) = self.id(MetricType::Counter, name, detail) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    pub fn gauge(&mut self, name: &'static str, value: u64) {
        if let Some(id) = self.id(MetricType::Gauge, name, "") {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    pub fn histogram(&mut self, name: &'static str, value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, name, "") {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}
