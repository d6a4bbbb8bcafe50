//! A bounded per-VM cache of verified tokens, keyed by SHA-256 of the whole
//! token, so a repeated token skips the signature check. A hit never skips
//! what can change: the caller re-checks the time claims, that the signing
//! key is still in the current key set, and the revocation list.
//!
//! Eviction is two-generation (an O(1) approximation of LRU): entries go to
//! the young map; when it is full it becomes the old map and the previous
//! old map is dropped; a hit in the old map moves the entry back to young.
use crate::token::Verified;
use std::rc::Rc;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub type TokenHash = [u8; 32];

pub fn hash(token: &[u8]) -> TokenHash {
    Sha256::digest(token).into()
}

#[derive(Debug, Clone)]
pub struct CachedToken {
    pub provider: usize,
    pub verified: Rc<Verified>,
    /// The key that verified it (`kid`, raw bytes), to check it is still
    /// in the current key set.
    pub kid: Option<String>,
    pub key: [u8; 32],
}

/// The key is already a uniform hash: use its first 8 bytes as is.
#[derive(Default)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

type Map = HashMap<TokenHash, CachedToken, BuildHasherDefault<PrefixHasher>>;

#[derive(Default)]
pub struct TokenCache {
    capacity: usize,
    young: Map,
    old: Map,
    pub hits: u64,
    pub misses: u64,
}

impl TokenCache {
    /// `capacity` 0 disables the cache. Memory is bounded by 2 × capacity.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { capacity, ..TokenCache::default() }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub fn get(&mut self, h: &TokenHash) -> Option<&CachedToken> {
        if !self.enabled() {
            return None;
        }
        if !self.young.contains_key(h) {
            let promoted = self.old.remove(h)?;
            self.insert(*h, promoted);
        }
        self.young.get(h)
    }

    pub fn insert(&mut self, h: TokenHash, entry: CachedToken) {
        if !self.enabled() {
            return;
        }
        if self.young.len() >= self.capacity {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(h, entry);
    }

    pub fn remove(&mut self, h: &TokenHash) {
        self.young.remove(h);
        self.old.remove(h);
    }

    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map as JsonMap;

    fn entry(n: u8) -> CachedToken {
        CachedToken {
            provider: 0,
            verified: Rc::new(Verified { claims: JsonMap::new(), exp: Some(i64::from(n)) }),
            kid: None,
            key: [n; 32],
        }
    }

    #[test]
    fn bounded_and_recent_entries_survive() {
        let mut c = TokenCache::new(3);
        for n in 0..3u8 {
            c.insert(hash(&[n]), entry(n));
        }
        assert!(c.get(&hash(&[0])).is_some());
        // Filling past capacity rotates generations; the total stays bounded.
        for n in 3..20u8 {
            c.insert(hash(&[n]), entry(n));
            assert!(c.len() <= 6);
        }
        assert!(c.get(&hash(&[19])).is_some());
        assert!(c.get(&hash(&[0])).is_none());
        // A hit in the old generation is promoted and survives a rotation.
        let mut c = TokenCache::new(2);
        c.insert(hash(b"a"), entry(1));
        c.insert(hash(b"b"), entry(2));
        c.insert(hash(b"c"), entry(3)); // a, b now old
        assert!(c.get(&hash(b"a")).is_some()); // promoted: young = {c, a}
        c.insert(hash(b"d"), entry(4)); // rotation: old = {c, a}
        assert!(c.get(&hash(b"a")).is_some());
        assert!(c.get(&hash(b"b")).is_none());
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let mut c = TokenCache::new(0);
        c.insert(hash(b"x"), entry(1));
        assert!(c.get(&hash(b"x")).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn hash_is_of_the_whole_token() {
        assert_ne!(hash(b"a.b.c"), hash(b"a.b.d"));
        assert_eq!(hash(b"a.b.c"), hash(b"a.b.c"));
    }
}
