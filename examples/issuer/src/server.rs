//! HTTP interface of `serve`: JWKS, token minting and key-rotation admin.
//!
//! Routing lives in `App::handle`, a plain function of (method, url, body) with
//! an injectable clock, so tests can drive grace periods without sleeping;
//! `start` only glues it to a few tiny_http worker threads.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use std::io::Read;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use tiny_http::{Header, Request, Response, Server};

use crate::keystore::KeyStore;
use crate::token::{Signer, TokenRequest};

/// Request bodies above this are refused; a token request is a few hundred bytes.
const MAX_BODY: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct Config {
    pub issuer: String,
    pub cache_max_age: u64,
    pub edge_ttl: u64,
    pub grace: u64,
    pub rotate_every: Option<u64>,
}

/// Returns Unix seconds; tests substitute a controllable clock.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            headers: vec![
                ("Content-Type", "application/json".into()),
                ("Cache-Control", "no-store".into()),
            ],
            body: v.to_string().into_bytes(),
        }
    }

    fn error(status: u16, msg: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "error": msg.into() }))
    }

    #[cfg(test)]
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_header(&mut self, name: &'static str, value: String) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value));
    }
}

#[derive(Clone, Copy)]
enum Route {
    Jwks,
    Token,
    Publish,
    Promote,
    Retire,
    Keys,
    Health,
}

pub struct App {
    cfg: Config,
    store: Mutex<KeyStore>,
    clock: Clock,
}

impl App {
    pub fn new(cfg: Config, store: KeyStore, clock: Clock) -> App {
        App {
            cfg,
            store: Mutex::new(store),
            clock,
        }
    }

    pub fn handle(&self, method: &str, url: &str, body: &[u8]) -> Reply {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let (route, allow) = match path {
            "/.well-known/jwks.json" => (Route::Jwks, "GET, HEAD"),
            "/token" => (Route::Token, "POST"),
            "/admin/rotate/publish" => (Route::Publish, "POST"),
            "/admin/rotate/promote" => (Route::Promote, "POST"),
            "/admin/rotate/retire" => (Route::Retire, "POST"),
            "/admin/keys" => (Route::Keys, "GET, HEAD"),
            "/healthz" => (Route::Health, "GET, HEAD"),
            _ => return Reply::error(404, "not found"),
        };
        if !allow.split(", ").any(|m| m == method) {
            let mut r = Reply::error(405, format!("method not allowed; use {allow}"));
            r.set_header("Allow", allow.to_string());
            return r;
        }
        let result = match route {
            Route::Health => {
                return Reply {
                    status: 200,
                    headers: vec![("Content-Type", "text/plain".into())],
                    body: b"ok".to_vec(),
                }
            }
            Route::Jwks => self.jwks(),
            Route::Token => self.token(body),
            Route::Keys => self
                .with_store(|s| Ok(s.state()))
                .map(|v| Reply::json(200, &v)),
            Route::Publish => self.change(|s, now| s.publish(now)),
            Route::Promote => self.change(|s, now| s.promote(now).map(|()| true)),
            Route::Retire => self.change(|s, _| Ok(s.retire_all())),
        };
        result.unwrap_or_else(|e| Reply::error(500, format!("{e:#}")))
    }

    fn jwks(&self) -> Result<Reply> {
        let jwks = self.with_store(|s| Ok(s.jwks(self.cfg.cache_max_age, self.cfg.edge_ttl)))?;
        let mut r = Reply::json(200, &jwks);
        // Edge proxies cache for edge_ttl; the JWKS body tells verifiers the rest.
        r.set_header(
            "Cache-Control",
            format!("public, max-age={}", self.cfg.edge_ttl),
        );
        Ok(r)
    }

    fn token(&self, body: &[u8]) -> Result<Reply> {
        // An empty body means "all defaults".
        let req: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
            TokenRequest::default()
        } else {
            match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => return Ok(Reply::error(400, format!("bad JSON: {e}"))),
            }
        };
        let now = (self.clock)();
        let claims = match req.claims(&self.cfg.issuer, now) {
            Ok(c) => c,
            Err(e) => return Ok(Reply::error(400, format!("{e:#}"))),
        };
        let which = req.key.unwrap_or_default();
        let with_kid = !req.no_kid.unwrap_or(false);
        let signer = self.with_store(|s| match s.select(which) {
            Some(k) => Signer::new(k, with_kid).map(Some),
            None => Ok(None),
        })?;
        let Some(signer) = signer else {
            return Ok(Reply::error(409, format!("no {} key", which.name())));
        };
        let token = signer.sign(&claims)?;
        Ok(Reply::json(
            200,
            &json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": req.ttl(),
                "kid": signer.kid,
            }),
        ))
    }

    /// Locks the store after bringing it up to date: picks up rewrites by other
    /// processes and drops retiring keys whose grace period has passed.
    fn lock_fresh(&self, now: i64) -> Result<MutexGuard<'_, KeyStore>> {
        // A panic elsewhere must not take the issuer down; the store is only
        // ever replaced whole, so a poisoned guard still holds a valid value.
        let mut guard = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = guard.reload_if_changed() {
            // Keep serving the last good keys rather than failing every request.
            eprintln!("edge-jwt-issuer: keeping in-memory keys: {e:#}");
        }
        let mut copy = guard.clone();
        if copy.expire(now, self.cfg.grace) {
            copy.save()?;
            *guard = copy;
        }
        Ok(guard)
    }

    fn with_store<T>(&self, f: impl FnOnce(&KeyStore) -> Result<T>) -> Result<T> {
        let guard = self.lock_fresh((self.clock)())?;
        f(&guard)
    }

    /// Applies a state change to a copy, persists it, and only then makes it
    /// live, so a failed write never leaves memory and disk disagreeing.
    fn mutate(&self, f: impl FnOnce(&mut KeyStore, i64) -> Result<bool>) -> Result<Value> {
        let now = (self.clock)();
        let mut guard = self.lock_fresh(now)?;
        let mut copy = guard.clone();
        if f(&mut copy, now)? {
            copy.save()?;
            *guard = copy;
        }
        Ok(guard.state())
    }

    fn change(&self, f: impl FnOnce(&mut KeyStore, i64) -> Result<bool>) -> Result<Reply> {
        self.mutate(f).map(|state| Reply::json(200, &state))
    }

    /// Periodic housekeeping: grace expiry and optional automatic rotation.
    pub fn tick(&self) -> Result<()> {
        let every = self
            .cfg
            .rotate_every
            .map(|e| i64::try_from(e).unwrap_or(i64::MAX));
        self.mutate(|s, now| match every {
            Some(every) if now.saturating_sub(s.current.signing_since()) >= every => {
                s.promote(now)?;
                Ok(true)
            }
            _ => Ok(false),
        })
        .map(|_| ())
    }
}

/// A running listener; `shutdown` stops the workers after their current request.
pub struct Running {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// Binds `listen` (port 0 picks a free port; see `Running::addr`) and serves
/// requests on `workers` threads.
pub fn start(app: Arc<App>, listen: &str, workers: usize) -> Result<Running> {
    let server = Server::http(listen).map_err(|e| anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("{listen} is not an IP address"))?;
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = (0..workers.max(1))
        .map(|_| {
            let (server, app, stop) = (server.clone(), app.clone(), stop.clone());
            // Polling with a timeout lets workers notice `stop` without extra plumbing.
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(req)) => serve_one(&app, req),
                        Ok(None) => {}
                        Err(e) => {
                            eprintln!("edge-jwt-issuer: accept failed: {e}");
                            thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
        })
        .collect();
    Ok(Running {
        addr,
        stop,
        workers,
    })
}

fn serve_one(app: &App, mut req: Request) {
    let method = req.method().as_str().to_string();
    let url = req.url().to_string();
    let reply = match read_body(&mut req) {
        Ok(body) => panic::catch_unwind(AssertUnwindSafe(|| app.handle(&method, &url, &body)))
            .unwrap_or_else(|_| Reply::error(500, "internal error")),
        Err(r) => r,
    };
    let mut resp = Response::from_data(reply.body).with_status_code(reply.status);
    for (name, value) in &reply.headers {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            resp.add_header(h);
        }
    }
    // The client may have gone away; nothing useful to do about it.
    let _ = req.respond(resp);
}

fn read_body(req: &mut Request) -> Result<Vec<u8>, Reply> {
    if req.body_length().is_some_and(|n| n as u64 > MAX_BODY) {
        return Err(Reply::error(413, "body too large"));
    }
    let mut body = Vec::new();
    match req.as_reader().take(MAX_BODY + 1).read_to_end(&mut body) {
        Ok(n) if n as u64 > MAX_BODY => Err(Reply::error(413, "body too large")),
        Ok(_) => Ok(body),
        Err(e) => Err(Reply::error(400, format!("cannot read body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::tests::tempdir;
    use crate::token::tests::verify_with_jwk;
    use std::io::Write;
    use std::net::TcpStream;
    use std::sync::atomic::AtomicI64;

    const T0: i64 = 1_764_000_000;

    fn config() -> Config {
        Config {
            issuer: "https://issuer.demo.local".into(),
            cache_max_age: 3600,
            edge_ttl: 300,
            grace: 900,
            rotate_every: None,
        }
    }

    fn app(tag: &str, cfg: Config) -> (App, Arc<AtomicI64>, std::path::PathBuf) {
        let dir = tempdir(tag);
        let (store, _) = KeyStore::open(&dir, T0).unwrap();
        let t = Arc::new(AtomicI64::new(T0));
        let t2 = t.clone();
        let clock: Clock = Arc::new(move || t2.load(Ordering::SeqCst));
        (App::new(cfg, store, clock), t, dir)
    }

    fn json_of(r: &Reply) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn routing_errors() {
        let (app, _, dir) = app("routes", config());
        assert_eq!(app.handle("GET", "/nope", b"").status, 404);
        let r = app.handle("POST", "/.well-known/jwks.json", b"");
        assert_eq!(r.status, 405);
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
        assert_eq!(app.handle("GET", "/token", b"").status, 405);
        assert_eq!(app.handle("GET", "/admin/rotate/promote", b"").status, 405);
        for bad in [
            &b"{"[..],
            b"[]",
            b"null",
            b"{\"ttl\":\"x\"}",
            b"{\"bogus\":1}",
            b"\xff\xfe",
        ] {
            let r = app.handle("POST", "/token", bad);
            assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
            assert!(json_of(&r)["error"].as_str().unwrap().len() < 300);
        }
        assert_eq!(
            app.handle("POST", "/token", b"{\"ttl\":9223372036854775807}")
                .status,
            400
        );
        // No retiring key yet.
        assert_eq!(
            app.handle("POST", "/token", br#"{"key":"retiring"}"#)
                .status,
            409
        );
        let h = app.handle("GET", "/healthz", b"");
        assert_eq!((h.status, h.body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(app.handle("GET", "/healthz?x=1", b"").status, 200);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotation_endpoints_persist_and_grace_expires() {
        let (app, t, dir) = app("rotate", config());
        let s0 = json_of(&app.handle("GET", "/admin/keys", b""));
        assert!(s0["next"].is_string());
        assert_eq!(s0["retiring"], json!([]));
        // publish is idempotent while a next exists.
        assert_eq!(
            json_of(&app.handle("POST", "/admin/rotate/publish", b"")),
            s0
        );

        t.store(T0 + 10, Ordering::SeqCst);
        let s1 = json_of(&app.handle("POST", "/admin/rotate/promote", b""));
        assert_eq!(s1["current"], s0["next"]);
        assert_eq!(s1["retiring"], json!([s0["current"]]));
        assert!(s1["next"].is_string() && s1["next"] != s0["next"]);
        // Persisted: a fresh load sees the same state.
        let on_disk = KeyStore::load(&dir.join("keys.json")).unwrap();
        assert_eq!(on_disk.state(), s1);

        // A token from the retiring key verifies against the served JWKS.
        let tok = json_of(&app.handle("POST", "/token", br#"{"key":"retiring"}"#));
        assert_eq!(tok["kid"], s0["current"]);
        let jwks = json_of(&app.handle("GET", "/.well-known/jwks.json", b""));
        let kids: Vec<Value> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].clone())
            .collect();
        assert_eq!(
            kids,
            vec![
                s1["current"].clone(),
                s1["next"].clone(),
                s0["current"].clone()
            ]
        );
        let jwk = &jwks["keys"][2];
        verify_with_jwk(tok["access_token"].as_str().unwrap(), jwk);

        // Grace (900 s) not over yet, then over: the key drops out on the next request.
        t.store(T0 + 10 + 899, Ordering::SeqCst);
        assert_eq!(
            json_of(&app.handle("GET", "/admin/keys", b""))["retiring"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        t.store(T0 + 10 + 900, Ordering::SeqCst);
        let jwks = json_of(&app.handle("GET", "/.well-known/jwks.json", b""));
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert_eq!(
            KeyStore::load(&dir.join("keys.json"))
                .unwrap()
                .retiring
                .len(),
            0
        );

        // Explicit retire.
        app.handle("POST", "/admin/rotate/promote", b"");
        let s = json_of(&app.handle("POST", "/admin/rotate/retire", b""));
        assert_eq!(s["retiring"], json!([]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tick_rotates_on_schedule() {
        let cfg = Config {
            rotate_every: Some(60),
            grace: 30,
            ..config()
        };
        let (app, t, dir) = app("tick", cfg);
        let first = json_of(&app.handle("GET", "/admin/keys", b""));
        t.store(T0 + 59, Ordering::SeqCst);
        app.tick().unwrap();
        assert_eq!(json_of(&app.handle("GET", "/admin/keys", b"")), first);
        t.store(T0 + 60, Ordering::SeqCst);
        app.tick().unwrap();
        let s = json_of(&app.handle("GET", "/admin/keys", b""));
        assert_eq!(s["current"], first["next"]);
        t.store(T0 + 90, Ordering::SeqCst);
        app.tick().unwrap();
        assert_eq!(
            json_of(&app.handle("GET", "/admin/keys", b""))["retiring"],
            json!([])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Minimal HTTP/1.1 client: returns (status, raw headers, body).
    fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[test]
    fn serves_over_a_real_socket() {
        let dir = tempdir("socket");
        let (store, _) = KeyStore::open(&dir, crate::clock::now()).unwrap();
        let app = Arc::new(App::new(config(), store, Arc::new(crate::clock::now)));
        let running = start(app, "127.0.0.1:0", 2).unwrap();
        let addr = running.addr;
        assert_ne!(addr.port(), 0);

        let (status, head, body) = http(addr, "GET", "/.well-known/jwks.json", "");
        assert_eq!(status, 200);
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains("cache-control: public, max-age=300"),
            "{head}"
        );
        let jwks: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(jwks["cache_max_age"], 3600);
        assert_eq!(jwks["edge_ttl"], 300);

        let req =
            r#"{"sub":"bob","scope":"read write","aud":["a","b"],"ttl":120,"edge_cacheable":true}"#;
        let (status, _, body) = http(addr, "POST", "/token", req);
        assert_eq!(status, 200, "{body}");
        let resp: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(resp["token_type"], "Bearer");
        assert_eq!(resp["expires_in"], 120);
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == resp["kid"])
            .unwrap();
        let (header, claims) = verify_with_jwk(resp["access_token"].as_str().unwrap(), jwk);
        assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
        assert_eq!(claims["sub"], "bob");
        assert_eq!(claims["aud"], json!(["a", "b"]));
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            120
        );
        assert_eq!(claims["edge_cacheable"], true);

        assert_eq!(http(addr, "POST", "/token", "{nope").0, 400);
        assert_eq!(http(addr, "GET", "/missing", "").0, 404);
        assert_eq!(http(addr, "DELETE", "/admin/keys", "").0, 405);
        assert_eq!(http(addr, "GET", "/healthz", "").2, "ok");
        running.shutdown();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
