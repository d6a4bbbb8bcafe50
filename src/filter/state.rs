//! Per-VM state shared by the root context and the HTTP contexts of one
//! worker: the compiled config, this VM's parsed view of the shared feeds
//! (JWKS sources and the revocation list), and requests paused for keys.
use super::host;
use crate::cache::{self, Control, Entry, Freshness};
use crate::config::{Config, Remote};
use crate::engine::{KeyState, KeyStore, RevocationState, Ring};
use crate::jwks::KeySet;
use crate::revocation::RevocationList;
use crate::token_cache::TokenCache;
use super::metrics::Metrics;
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FeedKind {
    Jwks { provider: usize, source: usize },
    Revocation,
}

pub enum Parsed {
    Keys(Rc<KeySet>),
    Revoked(Rc<RevocationList>),
}

/// One fetched document (a JWKS source or the revocation list) as this VM
/// sees it.
pub struct Feed {
    pub kind: FeedKind,
    pub remote: Rc<Remote>,
    pub entry_key: String,
    pub control_key: String,
    /// CAS of the entry we parsed; a new CAS means a new version.
    pub cas: Option<u32>,
    pub entry: Option<Entry>,
    pub parsed: Option<Parsed>,
}

impl Feed {
    pub fn name(&self) -> String {
        let uri = self.source().map(|s| s.uri.as_str()).unwrap_or_default();
        match self.kind {
            FeedKind::Jwks { .. } => format!("JWKS {uri}"),
            FeedKind::Revocation => format!("revocation list {uri}"),
        }
    }

    pub fn source(&self) -> Option<&crate::config::Source> {
        match self.kind {
            FeedKind::Jwks { source, .. } => self.remote.sources.get(source),
            FeedKind::Revocation => self.remote.sources.first(),
        }
    }

    /// Parses a body of this feed's kind; the error says why it is unusable.
    pub fn parse(&self, body: &[u8]) -> Result<Parsed, String> {
        match self.kind {
            FeedKind::Jwks { .. } => KeySet::parse(body, self.remote.max_body_bytes)
                .map(|k| Parsed::Keys(Rc::new(k)))
                .map_err(|e| e.to_string()),
            FeedKind::Revocation => RevocationList::parse(body, self.remote.max_body_bytes)
                .map(|l| Parsed::Revoked(Rc::new(l)))
                .map_err(|e| e.to_string()),
        }
    }

    fn keys(&self) -> Option<(&Entry, &KeySet)> {
        match (&self.entry, &self.parsed) {
            (Some(e), Some(Parsed::Keys(k))) => Some((e, k)),
            _ => None,
        }
    }
}

/// A request paused until keys arrive (cold start or unknown `kid`).
pub struct Waiter {
    pub deadline_ms: u64,
    pub method: String,
    pub path: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

pub struct VmState {
    pub config: Rc<Config>,
    pub feeds: Vec<Feed>,
    pub waiters: BTreeMap<u32, Waiter>,
    /// Set before each decision so `KeyStore` sees one clock.
    pub now_ms: u64,
    pub rng: host::Rng,
    pub holder_id: u64,
    /// Which feed each in-flight callout is for.
    pub calls: BTreeMap<u32, usize>,
    pub cache: TokenCache,
    pub metrics: Metrics,
}

/// Shared-data keys carry the plugin name: Istio never sets `vm_id`, so two
/// plugins could otherwise read each other's entries.
pub fn key_prefix(plugin_name: &str) -> String {
    format!("edge-jwt/{plugin_name}/")
}

impl VmState {
    pub fn new(config: Config, plugin_name: &str, seed: u64) -> VmState {
        let prefix = key_prefix(plugin_name);
        let mut feeds = Vec::new();
        let mut add = |kind, remote: &Rc<Remote>, stem: String| {
            feeds.push(Feed {
                kind,
                remote: remote.clone(),
                entry_key: format!("{prefix}{stem}/data"),
                control_key: format!("{prefix}{stem}/control"),
                cas: None,
                entry: None,
                parsed: None,
            })
        };
        for (p, provider) in config.providers.iter().enumerate() {
            if let Some(remote) = &provider.remote {
                let remote = Rc::new(remote.clone());
                for s in 0..remote.sources.len() {
                    add(FeedKind::Jwks { provider: p, source: s }, &remote, format!("jwks/{}/{s}", provider.name));
                }
            }
        }
        if let Some(r) = &config.revocation {
            add(FeedKind::Revocation, &Rc::new(r.remote.clone()), "revocation".into());
        }
        let mut rng = host::Rng::new(seed);
        let holder_id = rng.next();
        let cache = TokenCache::new(config.jwt_cache_size);
        VmState {
            config: Rc::new(config),
            feeds,
            waiters: BTreeMap::new(),
            now_ms: 0,
            rng,
            holder_id,
            calls: BTreeMap::new(),
            cache,
            metrics: Metrics::new(plugin_name),
        }
    }

    /// Reads one feed's shared entry; parses it only when its CAS changed,
    /// so each VM parses each version once.
    pub fn sync(&mut self, f: usize) {
        let Some(feed) = self.feeds.get_mut(f) else { return };
        let (raw, cas) = host::shared_get(&feed.entry_key);
        if cas == feed.cas {
            return;
        }
        feed.cas = cas;
        let Some(entry) = raw.as_deref().and_then(Entry::decode) else { return };
        // The body was validated before it was stored; should it fail here
        // the previous version stays in use rather than nothing.
        if let Ok(parsed) = feed.parse(&entry.body) {
            feed.parsed = Some(parsed);
            feed.entry = Some(entry);
        }
    }

    pub fn sync_all(&mut self) {
        for f in 0..self.feeds.len() {
            self.sync(f);
        }
    }

    pub fn control(&self, f: usize) -> Control {
        self.feeds
            .get(f)
            .and_then(|feed| host::shared_get(&feed.control_key).0)
            .and_then(|raw| Control::decode(&raw))
            .unwrap_or_default()
    }

    /// Updates a feed's control record by CAS, retrying when another VM
    /// wrote in between. Returns the record written.
    pub fn update_control(&self, f: usize, mut change: impl FnMut(&Control) -> Option<Control>) -> Option<Control> {
        let key = &self.feeds.get(f)?.control_key;
        for _ in 0..4 {
            let (raw, cas) = host::shared_get(key);
            let current = raw.as_deref().and_then(Control::decode).unwrap_or_default();
            let next = change(&current)?;
            // Records exist from configure time, so `cas` is a real version.
            if host::shared_set(key, &next.encode(), cas.or(Some(0))) {
                return Some(next);
            }
        }
        None
    }

    fn jwks_feeds(&self, p: usize) -> impl Iterator<Item = (usize, &Feed)> {
        self.feeds
            .iter()
            .enumerate()
            .filter(move |(_, f)| matches!(f.kind, FeedKind::Jwks { provider, .. } if provider == p))
    }

    /// Asks for a forced refetch of every source of `p` (unknown `kid`).
    pub fn request_forced(&self, p: usize) {
        let now = self.now_ms;
        let ids: Vec<usize> = self.jwks_feeds(p).map(|(i, _)| i).collect();
        for f in ids {
            let Some(remote) = self.feeds.get(f).map(|x| x.remote.clone()) else { continue };
            self.update_control(f, |c| cache::want_forced(c, &remote, now));
        }
    }

    /// Gauges every VM writes on its tick; all read the same shared data,
    /// so the last writer's values are everyone's.
    pub fn record_gauges(&mut self) {
        let now = self.now_ms;
        let mut jwks_age = 0;
        let mut stale = 0;
        let mut revocation_age = None;
        for f in &self.feeds {
            let Some(e) = &f.entry else { continue };
            let age = now.saturating_sub(e.fetched_at_ms) / 1000;
            match f.kind {
                FeedKind::Jwks { .. } => {
                    jwks_age = jwks_age.max(age);
                    if cache::freshness(e, &f.remote, now) != Freshness::Fresh {
                        stale = 1;
                    }
                }
                FeedKind::Revocation => revocation_age = Some(age),
            }
        }
        let keys: usize = (0..self.config.providers.len())
            .map(|p| match self.keys(p) {
                KeyState::Ready(r) => r.sets.iter().map(|s| s.keys.len()).sum(),
                _ => 0,
            })
            .sum();
        self.metrics.gauge("jwks_age_seconds", jwks_age);
        self.metrics.gauge("keys_loaded", keys as u64);
        self.metrics.gauge("stale", stale);
        if let Some(a) = revocation_age {
            self.metrics.gauge("revocation_age_seconds", a);
        }
    }

    pub fn wait_ms(&self, p: usize) -> u64 {
        let jwks = self.config.providers.get(p).and_then(|x| x.remote.as_ref()).map(|r| r.initial_fetch_wait_ms);
        let revocation = self.config.revocation.as_ref().map(|r| r.remote.initial_fetch_wait_ms);
        jwks.or(revocation).unwrap_or(0)
    }
}

impl KeyStore for VmState {
    fn keys(&self, p: usize) -> KeyState<'_> {
        let Some(provider) = self.config.providers.get(p) else { return KeyState::Unavailable };
        let mut ring = Ring { sets: Vec::new() };
        let mut ever_fetched = false;
        for (_, feed) in self.jwks_feeds(p) {
            if let Some((entry, keys)) = feed.keys() {
                ever_fetched = true;
                if cache::freshness(entry, &feed.remote, self.now_ms) != Freshness::Expired {
                    ring.sets.push(keys);
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
        self.jwks_feeds(p).any(|(f, feed)| {
            let c = self.control(f);
            c.leased(self.now_ms) || c.may_force(&feed.remote, self.now_ms)
        })
    }

    fn revocation(&self) -> RevocationState<'_> {
        let Some((idx, feed)) = self.feeds.iter().enumerate().find(|(_, f)| f.kind == FeedKind::Revocation) else {
            return RevocationState::NotConfigured;
        };
        match (&feed.entry, &feed.parsed) {
            (Some(e), Some(Parsed::Revoked(l))) => {
                if cache::freshness(e, &feed.remote, self.now_ms) == Freshness::Expired {
                    RevocationState::TooStale(Some(l))
                } else {
                    RevocationState::Usable(l)
                }
            }
            // Never loaded: worth waiting for, until a fetch has failed.
            _ if self.control(idx).failures > 0 => RevocationState::TooStale(None),
            _ => RevocationState::Loading,
        }
    }
}
