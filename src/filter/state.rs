//! Per-VM state shared by the root context and the HTTP contexts of one
//! worker: the compiled config, this VM's parsed view of the shared JWKS
//! cache, and the requests paused waiting for keys.
use super::host;
use crate::cache::{self, Control, Entry, Freshness};
use crate::config::{Config, Remote};
use crate::engine::{KeyState, KeyStore, Ring};
use crate::jwks::KeySet;
use std::collections::BTreeMap;
use std::rc::Rc;

/// One JWKS source (one `http_uri`) as this VM sees it.
pub struct SourceView {
    pub entry_key: String,
    pub control_key: String,
    /// CAS of the entry we parsed; a new CAS means a new version.
    pub cas: Option<u32>,
    pub entry: Option<Entry>,
    pub keys: Option<Rc<KeySet>>,
    /// Whether this VM has logged the source as failing (log once per change).
    pub logged_failing: bool,
}

/// A request paused until keys arrive (cold start or unknown `kid`).
pub struct Waiter {
    pub provider: usize,
    pub deadline_ms: u64,
    pub method: String,
    pub path: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

pub struct VmState {
    pub config: Rc<Config>,
    pub sources: Vec<Vec<SourceView>>,
    pub waiters: BTreeMap<u32, Waiter>,
    /// Set before each decision so `KeyStore` sees one clock.
    pub now_ms: u64,
    pub rng: host::Rng,
    pub holder_id: u64,
    /// Which source each in-flight callout is for.
    pub calls: BTreeMap<u32, (usize, usize)>,
    pub verdict_header: String,
}

/// Shared-data keys carry the plugin name: Istio never sets `vm_id`, so two
/// plugins could otherwise read each other's entries.
pub fn key_prefix(plugin_name: &str) -> String {
    format!("edge-jwt/{plugin_name}/")
}

impl VmState {
    pub fn new(config: Config, plugin_name: &str, seed: u64) -> VmState {
        let prefix = key_prefix(plugin_name);
        let sources = config
            .providers
            .iter()
            .map(|p| {
                p.remote
                    .iter()
                    .flat_map(|r| r.sources.iter().enumerate())
                    .map(|(i, _)| SourceView {
                        entry_key: format!("{prefix}{}/{i}/jwks", p.name),
                        control_key: format!("{prefix}{}/{i}/control", p.name),
                        cas: None,
                        entry: None,
                        keys: None,
                        logged_failing: false,
                    })
                    .collect()
            })
            .collect();
        let mut rng = host::Rng::new(seed);
        let holder_id = rng.next();
        VmState {
            config: Rc::new(config),
            sources,
            waiters: BTreeMap::new(),
            now_ms: 0,
            rng,
            holder_id,
            calls: BTreeMap::new(),
            verdict_header: "x-jwt-verified".into(),
        }
    }

    pub fn remote(&self, provider: usize) -> Option<&Remote> {
        self.config.providers.get(provider).and_then(|p| p.remote.as_ref())
    }

    /// Reads the shared entry of one source; parses it only when its CAS
    /// changed, so each VM parses each version once.
    pub fn sync_source(&mut self, p: usize, s: usize) {
        let Some(view) = self.sources.get_mut(p).and_then(|v| v.get_mut(s)) else { return };
        let (raw, cas) = host::shared_get(&view.entry_key);
        if cas == view.cas {
            return;
        }
        view.cas = cas;
        let Some(entry) = raw.as_deref().and_then(Entry::decode) else { return };
        // The body was validated before it was stored; a parse failure here
        // keeps the previous keys rather than dropping them.
        if let Ok(set) = KeySet::parse(&entry.body, usize::MAX) {
            view.keys = Some(Rc::new(set));
            view.entry = Some(entry);
        }
    }

    pub fn sync_provider(&mut self, p: usize) {
        let n = self.sources.get(p).map_or(0, Vec::len);
        for s in 0..n {
            self.sync_source(p, s);
        }
    }

    pub fn control(&self, p: usize, s: usize) -> (Control, Option<u32>) {
        let Some(view) = self.sources.get(p).and_then(|v| v.get(s)) else {
            return (Control::default(), None);
        };
        let (raw, cas) = host::shared_get(&view.control_key);
        (raw.as_deref().and_then(Control::decode).unwrap_or_default(), cas)
    }

    /// Updates a source's control record by CAS, retrying a few times when
    /// another VM wrote in between. Returns the record written.
    pub fn update_control(
        &self,
        p: usize,
        s: usize,
        f: impl Fn(&Control) -> Option<Control>,
    ) -> Option<Control> {
        let key = &self.sources.get(p)?.get(s)?.control_key;
        for _ in 0..4 {
            let (raw, cas) = host::shared_get(key);
            let current = raw.as_deref().and_then(Control::decode).unwrap_or_default();
            let next = f(&current)?;
            // A missing record is created with CAS 0 semantics (no CAS).
            if host::shared_set(key, &next.encode(), cas.or(Some(0))) {
                return Some(next);
            }
        }
        None
    }

    /// Asks for a forced refetch of every source of `p` (unknown `kid`).
    pub fn request_forced(&self, p: usize) {
        let Some(remote) = self.remote(p).cloned() else { return };
        let now = self.now_ms;
        for s in 0..remote.sources.len() {
            self.update_control(p, s, |c| cache::want_forced(c, &remote, now));
        }
    }
}

impl KeyStore for VmState {
    fn keys(&self, p: usize) -> KeyState<'_> {
        let Some(provider) = self.config.providers.get(p) else { return KeyState::Unavailable };
        let mut ring = Ring { sets: Vec::new() };
        let mut ever_fetched = false;
        if let (Some(remote), Some(views)) = (&provider.remote, self.sources.get(p)) {
            for v in views {
                if let (Some(entry), Some(keys)) = (&v.entry, &v.keys) {
                    ever_fetched = true;
                    if cache::freshness(entry, remote, self.now_ms) != Freshness::Expired {
                        ring.sets.push(keys);
                    }
                }
            }
        }
        if !ring.sets.is_empty() {
            return KeyState::Ready(ring);
        }
        // local_jwks: the only keys, or bootstrap keys until a fetch lands.
        if let Some(local) = &provider.local_keys {
            if !ever_fetched || provider.remote.is_none() {
                ring.sets.push(local);
                return KeyState::Ready(ring);
            }
        }
        if ever_fetched {
            KeyState::Unavailable
        } else {
            KeyState::Loading
        }
    }

    fn can_refetch(&self, p: usize) -> bool {
        let Some(remote) = self.remote(p) else { return false };
        (0..remote.sources.len()).any(|s| {
            let (c, _) = self.control(p, s);
            c.leased(self.now_ms) || c.may_force(remote, self.now_ms)
        })
    }
}
