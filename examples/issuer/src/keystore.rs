//! Ed25519 key store persisted in `DIR/keys.json`.
//!
//! The in-memory shape (`current` + optional `next` + `retiring` list) makes the
//! "exactly one current, at most one next" rule impossible to break; the file
//! keeps the flat `{"keys":[{..., "status": ...}]}` layout from the design.

use anyhow::{anyhow, bail, Context, Result};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::clock::utc_date;

pub const FILE_NAME: &str = "keys.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Current,
    Next,
    Retiring,
}

/// Which key signs a token; `retiring` means the most recently retired one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeySel {
    #[default]
    Current,
    Next,
    Retiring,
}

impl KeySel {
    pub fn name(self) -> &'static str {
        match self {
            KeySel::Current => "current",
            KeySel::Next => "next",
            KeySel::Retiring => "retiring",
        }
    }
}

/// One entry of keys.json, exactly as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    kid: String,
    status: Status,
    seed: String,
    created: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promoted_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retiring_since: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<Record>,
    /// Last kid ever handed out. Kept so a kid dropped by `retire` is never
    /// reused for different key material (verifiers cache keys by kid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_kid: Option<String>,
}

#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub created: i64,
    pub promoted_at: Option<i64>,
    pub retiring_since: Option<i64>,
    pub signing: SigningKey,
}

impl Key {
    fn generate(kid: String, now: i64) -> Result<Key> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow!("OS random generator failed: {e}"))?;
        Ok(Key {
            kid,
            created: now,
            promoted_at: None,
            retiring_since: None,
            signing: SigningKey::from_bytes(&seed),
        })
    }

    fn from_record(r: Record) -> Result<Key> {
        let raw = URL_SAFE_NO_PAD
            .decode(r.seed.trim_end_matches('='))
            .with_context(|| format!("key {}: seed is not base64url", r.kid))?;
        let seed: [u8; 32] = raw
            .try_into()
            .map_err(|_| anyhow!("key {}: seed must be 32 bytes", r.kid))?;
        Ok(Key {
            kid: r.kid,
            created: r.created,
            promoted_at: r.promoted_at,
            retiring_since: r.retiring_since,
            signing: SigningKey::from_bytes(&seed),
        })
    }

    fn to_record(&self, status: Status) -> Record {
        Record {
            kid: self.kid.clone(),
            status,
            seed: URL_SAFE_NO_PAD.encode(self.signing.to_bytes()),
            created: self.created,
            promoted_at: self.promoted_at,
            retiring_since: self.retiring_since,
        }
    }

    /// Public JWK (RFC 8037 OKP) for this key.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.signing.verifying_key().to_bytes()),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        })
    }

    /// When this key started signing (used for `--rotate-every`).
    pub fn signing_since(&self) -> i64 {
        self.promoted_at.unwrap_or(self.created)
    }

    /// A retiring key without a timestamp (hand-edited file) counts from creation.
    fn retired_at(&self) -> i64 {
        self.retiring_since.unwrap_or(self.created)
    }
}

/// File identity used to notice that another process (e.g. `rotate`) rewrote
/// keys.json: (mtime, length, inode). Every save is a rename of a new file, so
/// the inode alone changes even when the clock is coarse.
type Stamp = (Option<SystemTime>, u64, u64);

#[derive(Clone)]
pub struct KeyStore {
    path: PathBuf,
    pub current: Key,
    pub next: Option<Key>,
    /// Newest first.
    pub retiring: Vec<Key>,
    last_kid: Option<String>,
    stamp: Option<Stamp>,
}

impl KeyStore {
    /// Loads `dir/keys.json`, creating it (current + next) when absent.
    /// Returns the store and whether it was created now.
    pub fn open(dir: &Path, now: i64) -> Result<(KeyStore, bool)> {
        let path = dir.join(FILE_NAME);
        if path.exists() {
            return Ok((Self::load(&path)?, false));
        }
        create_private_dir(dir)?;
        let kid = utc_date(now);
        let mut current = Key::generate(kid.clone(), now)?;
        current.promoted_at = Some(now);
        let mut store = KeyStore {
            path: path.clone(),
            current,
            next: None,
            retiring: Vec::new(),
            last_kid: Some(kid),
            stamp: None,
        };
        store.publish(now)?;
        // Exclusive create: if another process won the race, use its keys.
        if write_atomic(&path, &store.to_bytes()?, true)? {
            store.stamp = stamp_of(&path);
            Ok((store, true))
        } else {
            Ok((Self::load(&path)?, false))
        }
    }

    pub fn load(path: &Path) -> Result<KeyStore> {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file: KeyFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        let mut current = None;
        let mut next = None;
        let mut retiring = Vec::new();
        let mut seen = HashSet::new();
        for r in file.keys {
            if !seen.insert(r.kid.clone()) {
                bail!("{}: duplicate kid {}", path.display(), r.kid);
            }
            let status = r.status;
            let key = Key::from_record(r)?;
            let slot = match status {
                Status::Current => &mut current,
                Status::Next => &mut next,
                Status::Retiring => {
                    retiring.push(key);
                    continue;
                }
            };
            if slot.replace(key).is_some() {
                bail!("{}: more than one {:?} key", path.display(), status);
            }
        }
        let current = current.ok_or_else(|| anyhow!("{}: no current key", path.display()))?;
        retiring.sort_by_key(|k| std::cmp::Reverse(k.retired_at()));
        Ok(KeyStore {
            path: path.to_path_buf(),
            current,
            next,
            retiring,
            last_kid: file.last_kid,
            stamp: stamp_of(path),
        })
    }

    /// Re-reads the file if someone else replaced it since we last read/wrote it.
    pub fn reload_if_changed(&mut self) -> Result<bool> {
        let now_stamp = stamp_of(&self.path);
        if now_stamp.is_none() || now_stamp == self.stamp {
            return Ok(false);
        }
        *self = Self::load(&self.path)?;
        Ok(true)
    }

    pub fn save(&mut self) -> Result<()> {
        write_atomic(&self.path, &self.to_bytes()?, false)?;
        self.stamp = stamp_of(&self.path);
        Ok(())
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut keys = vec![self.current.to_record(Status::Current)];
        keys.extend(self.next.iter().map(|k| k.to_record(Status::Next)));
        keys.extend(self.retiring.iter().map(|k| k.to_record(Status::Retiring)));
        let file = KeyFile {
            keys,
            last_kid: self.last_kid.clone(),
        };
        let mut out = serde_json::to_vec_pretty(&file)?;
        out.push(b'\n');
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn all(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.current)
            .chain(self.next.iter())
            .chain(self.retiring.iter())
    }

    /// Date kid (UTC day of `now`), suffixed `-2`, `-3`, … so it is never equal
    /// to a kid in the file or to any kid handed out before.
    fn new_kid(&mut self, now: i64) -> String {
        let day = utc_date(now);
        let highest = self
            .all()
            .map(|k| k.kid.as_str())
            .chain(self.last_kid.as_deref())
            .filter_map(|kid| kid_suffix(kid, &day))
            .max();
        let kid = match highest {
            None => day,
            Some(n) => format!("{day}-{}", n + 1),
        };
        self.last_kid = Some(kid.clone());
        kid
    }

    /// Ensures a `next` key exists. Returns true if one was created.
    pub fn publish(&mut self, now: i64) -> Result<bool> {
        if self.next.is_some() {
            return Ok(false);
        }
        let kid = self.new_kid(now);
        self.next = Some(Key::generate(kid, now)?);
        Ok(true)
    }

    /// next → current, current → retiring, then a fresh next is published.
    pub fn promote(&mut self, now: i64) -> Result<()> {
        let mut incoming = match self.next.take() {
            Some(k) => k,
            None => {
                let kid = self.new_kid(now);
                Key::generate(kid, now)?
            }
        };
        incoming.promoted_at = Some(now);
        let mut old = std::mem::replace(&mut self.current, incoming);
        old.retiring_since = Some(now);
        self.retiring.insert(0, old);
        self.publish(now)?;
        Ok(())
    }

    /// Offline rotation: the same as HTTP publish followed by promote.
    pub fn rotate(&mut self, now: i64) -> Result<()> {
        self.publish(now)?;
        self.promote(now)
    }

    /// Drops every retiring key. Returns true if any was dropped.
    pub fn retire_all(&mut self) -> bool {
        let had = !self.retiring.is_empty();
        self.retiring.clear();
        had
    }

    /// Drops retiring keys whose grace period (seconds) has run out.
    pub fn expire(&mut self, now: i64, grace: u64) -> bool {
        let before = self.retiring.len();
        let grace = i64::try_from(grace).unwrap_or(i64::MAX);
        self.retiring
            .retain(|k| now.saturating_sub(k.retired_at()) < grace);
        self.retiring.len() != before
    }

    pub fn select(&self, which: KeySel) -> Option<&Key> {
        match which {
            KeySel::Current => Some(&self.current),
            KeySel::Next => self.next.as_ref(),
            KeySel::Retiring => self.retiring.first(),
        }
    }

    /// Seed-free summary: `{"current":kid,"next":kid|null,"retiring":[kid…]}`.
    pub fn state(&self) -> Value {
        json!({
            "current": self.current.kid,
            "next": self.next.as_ref().map(|k| k.kid.clone()),
            "retiring": self.retiring.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
        })
    }

    /// Public JWKS: current first, then next, then retiring (newest first).
    pub fn jwks(&self, cache_max_age: u64, edge_ttl: u64) -> Value {
        json!({
            "keys": self.all().map(Key::jwk).collect::<Vec<_>>(),
            "cache_max_age": cache_max_age,
            "edge_ttl": edge_ttl,
        })
    }
}

/// `Some(n)` if `kid` is `day` (n = 1) or `day-n`.
fn kid_suffix(kid: &str, day: &str) -> Option<u64> {
    let rest = kid.strip_prefix(day)?;
    if rest.is_empty() {
        return Some(1);
    }
    rest.strip_prefix('-')?.parse().ok()
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok(), m.len(), ino))
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes via a 0600 temp file in the same directory, then renames it into
/// place so readers never see a half-written file. With `exclusive`, the final
/// step is a hard link that fails if the target exists; returns false then.
fn write_atomic(path: &Path, bytes: &[u8], exclusive: bool) -> Result<bool> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{FILE_NAME}.{}.{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> Result<bool> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        if exclusive {
            match fs::hard_link(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        } else {
            fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        }
        Ok(true)
    })();
    // After a rename this is a no-op error; after a link or failure it cleans up.
    let _ = fs::remove_file(&tmp);
    // Best effort: make the rename itself durable.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "edge-jwt-issuer-test-{tag}-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    const T0: i64 = 1_764_000_000; // 2025-11-24

    #[test]
    fn create_then_reload_keeps_keys() {
        let dir = tempdir("reload");
        let (a, created) = KeyStore::open(&dir, T0).unwrap();
        assert!(created);
        assert_eq!(a.current.kid, "2025-11-24");
        assert_eq!(a.next.as_ref().unwrap().kid, "2025-11-24-2");
        let (b, created) = KeyStore::open(&dir, T0 + 5).unwrap();
        assert!(!created);
        assert_eq!(b.current.kid, a.current.kid);
        assert_eq!(b.current.signing.to_bytes(), a.current.signing.to_bytes());
        assert_eq!(
            b.next.unwrap().signing.to_bytes(),
            a.next.unwrap().signing.to_bytes()
        );

        let text = fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys[0]["status"], "current");
        assert_eq!(keys[1]["status"], "next");
        assert_eq!(keys[0]["created"], T0);
        let seed = URL_SAFE_NO_PAD
            .decode(keys[0]["seed"].as_str().unwrap())
            .unwrap();
        assert_eq!(seed.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kids_stay_unique_across_many_rotations_and_retires() {
        let dir = tempdir("kids");
        let (mut s, _) = KeyStore::open(&dir, T0).unwrap();
        let mut seen: HashSet<String> = s.all().map(|k| k.kid.clone()).collect();
        for i in 0..50 {
            s.promote(T0 + i).unwrap();
            if i % 3 == 0 {
                s.retire_all();
            }
            s.save().unwrap();
            s = KeyStore::load(s.path()).unwrap();
            let next = s.next.as_ref().unwrap().kid.clone();
            assert!(seen.insert(next.clone()), "kid {next} reused");
        }
        assert!(seen.contains("2025-11-24-51"));
        // A new day starts over without a suffix.
        s.promote(T0 + 86_400).unwrap();
        assert_eq!(s.next.as_ref().unwrap().kid, "2025-11-25");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn publish_promote_retire_states() {
        let dir = tempdir("states");
        let (mut s, _) = KeyStore::open(&dir, T0).unwrap();
        let cur0 = s.current.kid.clone();
        let next0 = s.next.as_ref().unwrap().kid.clone();
        assert!(!s.publish(T0).unwrap(), "publish is idempotent");
        s.promote(T0 + 10).unwrap();
        assert_eq!(s.current.kid, next0);
        assert_eq!(s.current.promoted_at, Some(T0 + 10));
        assert_eq!(s.retiring[0].kid, cur0);
        assert_eq!(s.retiring[0].retiring_since, Some(T0 + 10));
        let next1 = s.next.as_ref().unwrap().kid.clone();
        assert_ne!(next1, next0);
        assert_eq!(
            s.state(),
            json!({"current": next0, "next": next1, "retiring": [cur0]})
        );
        // JWKS order: current, next, retiring.
        let jwks = s.jwks(3600, 300);
        let kids: Vec<_> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].clone())
            .collect();
        assert_eq!(kids, vec![json!(next0), json!(next1), json!(cur0)]);
        assert_eq!(jwks["cache_max_age"], 3600);
        assert_eq!(jwks["edge_ttl"], 300);
        assert!(s.retire_all());
        assert!(s.retiring.is_empty());
        assert!(!s.retire_all());
        // Promote with no next (hand-edited file) still ends with current + next.
        s.next = None;
        s.promote(T0 + 20).unwrap();
        assert!(s.next.is_some());
        assert_eq!(s.retiring.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn grace_expiry_uses_given_clock() {
        let dir = tempdir("grace");
        let (mut s, _) = KeyStore::open(&dir, T0).unwrap();
        s.promote(T0 + 100).unwrap();
        s.promote(T0 + 200).unwrap();
        assert_eq!(s.retiring.len(), 2);
        assert!(!s.expire(T0 + 100 + 899, 900));
        assert!(s.expire(T0 + 100 + 900, 900));
        assert_eq!(s.retiring.len(), 1);
        assert_eq!(s.retiring[0].retiring_since, Some(T0 + 200));
        assert!(s.expire(T0 + 200 + 900, 900));
        assert!(s.retiring.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_bad_files() {
        let dir = tempdir("bad");
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(FILE_NAME);
        let seed = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let cases = [
            "not json".to_string(),
            r#"{"keys":[]}"#.to_string(),
            format!(r#"{{"keys":[{{"kid":"a","status":"next","seed":"{seed}","created":1}}]}}"#),
            format!(
                r#"{{"keys":[{{"kid":"a","status":"current","seed":"{seed}","created":1}},{{"kid":"b","status":"current","seed":"{seed}","created":1}}]}}"#
            ),
            format!(
                r#"{{"keys":[{{"kid":"a","status":"current","seed":"{seed}","created":1}},{{"kid":"a","status":"next","seed":"{seed}","created":1}}]}}"#
            ),
            r#"{"keys":[{"kid":"a","status":"current","seed":"AAAA","created":1}]}"#.to_string(),
        ];
        for c in cases {
            fs::write(&p, &c).unwrap();
            assert!(KeyStore::load(&p).is_err(), "accepted {c}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_notices_external_rewrite() {
        let dir = tempdir("extern");
        let (mut a, _) = KeyStore::open(&dir, T0).unwrap();
        let mut b = KeyStore::load(a.path()).unwrap();
        b.rotate(T0 + 1).unwrap();
        b.save().unwrap();
        assert!(a.reload_if_changed().unwrap());
        assert_eq!(a.current.kid, b.current.kid);
        assert!(!a.reload_if_changed().unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
