//! edge-jwt-issuer: mints short-lived EdDSA (Ed25519) JWTs and publishes a
//! JWKS with current/next/retiring keys, for the edge-jwt demo and e2e tests.

mod clock;
mod keystore;
mod server;
mod token;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keystore::{KeySel, KeyStore};
use token::{parse_object, Signer, TokenRequest};

#[derive(Parser)]
#[command(name = "edge-jwt-issuer", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create DIR/keys.json (current + next key) if absent; print the key state.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the public JWKS.
    Jwks {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Print signed tokens, one per line.
    Mint(Box<MintArgs>),
    /// Promote next to current (old current becomes retiring), publish a new next.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
        /// Also drop retiring keys older than this many seconds.
        #[arg(long)]
        grace: Option<u64>,
    },
    /// Serve the JWKS, /token and the rotation admin API over HTTP.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct CacheArgs {
    /// `cache_max_age` advertised in the JWKS body (seconds).
    #[arg(long, default_value_t = 3600)]
    cache_max_age: u64,
    /// `edge_ttl` in the JWKS body and Cache-Control max-age (seconds).
    #[arg(long, default_value_t = 300)]
    edge_ttl: u64,
}

#[derive(clap::Args)]
struct MintArgs {
    #[arg(long)]
    dir: PathBuf,
    /// `iss` claim.
    #[arg(long)]
    issuer: String,
    #[arg(long, default_value = token::DEFAULT_SUB)]
    sub: String,
    /// Space-separated scopes.
    #[arg(long, default_value = token::DEFAULT_SCOPE)]
    scope: String,
    /// Audience; repeat for several. Default: api.demo.local.
    #[arg(long)]
    aud: Vec<String>,
    /// Lifetime in seconds; negative makes an already expired token.
    #[arg(long, default_value_t = token::DEFAULT_TTL, allow_negative_numbers = true)]
    ttl: i64,
    /// Add `nbf` = now + this many seconds.
    #[arg(long, allow_negative_numbers = true)]
    nbf_offset: Option<i64>,
    /// `user_context` claim as JSON.
    #[arg(long)]
    user_context: Option<String>,
    /// `jti` claim; with --count N > 1, `-<i>` is appended to keep them distinct.
    #[arg(long)]
    jti: Option<String>,
    #[arg(long)]
    edge_cacheable: bool,
    /// Which key signs.
    #[arg(long, value_enum, default_value_t = KeySel::Current)]
    key: KeySel,
    /// Leave `kid` out of the header.
    #[arg(long)]
    no_kid: bool,
    /// JSON object merged into the payload last (overrides any claim).
    #[arg(long)]
    extra_claims: Option<String>,
    /// Number of tokens to print.
    #[arg(long, default_value_t = 1)]
    count: u64,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Address to bind; port 0 picks a free port (the real one is printed).
    #[arg(long)]
    listen: String,
    /// `iss` claim of tokens from POST /token.
    #[arg(long)]
    issuer: String,
    #[command(flatten)]
    cache: CacheArgs,
    /// Seconds a retiring key stays in the JWKS.
    #[arg(long, default_value_t = 900)]
    grace: u64,
    /// Promote automatically when the current key has signed this long (seconds).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rotate_every: Option<u64>,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("edge-jwt-issuer: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Init { dir } => {
            let (store, created) = KeyStore::open(&dir, clock::now())?;
            let verb = if created { "created" } else { "using existing" };
            eprintln!("{verb} {}", store.path().display());
            print_line(&store.state().to_string())
        }
        Cmd::Jwks { dir, cache } => {
            let (store, _) = KeyStore::open(&dir, clock::now())?;
            print_line(&store.jwks(cache.cache_max_age, cache.edge_ttl).to_string())
        }
        Cmd::Mint(args) => mint(*args),
        Cmd::Rotate { dir, grace } => {
            let now = clock::now();
            let (mut store, _) = KeyStore::open(&dir, now)?;
            store.rotate(now)?;
            if let Some(g) = grace {
                store.expire(now, g);
            }
            store.save()?;
            print_line(&store.state().to_string())
        }
        Cmd::Serve(args) => serve(args),
    }
}

fn print_line(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")?;
    out.flush()?;
    Ok(())
}

fn mint(a: MintArgs) -> Result<()> {
    let (store, _) = KeyStore::open(&a.dir, clock::now())?;
    let key = store
        .select(a.key)
        .with_context(|| format!("no {} key in {}", a.key.name(), store.path().display()))?;
    // Load and prepare the key once: --count may ask for tens of thousands.
    let signer = Signer::new(key, !a.no_kid)?;
    let user_context = match &a.user_context {
        Some(text) => Some(serde_json::from_str(text).context("--user-context is not valid JSON")?),
        None => None,
    };
    let extra_claims = match &a.extra_claims {
        Some(text) => Some(parse_object(text, "--extra-claims")?),
        None => None,
    };
    let mut req = TokenRequest {
        sub: Some(a.sub),
        scope: Some(token::OneOrMany::One(a.scope)),
        aud: (!a.aud.is_empty()).then_some(token::OneOrMany::Many(a.aud)),
        ttl: Some(a.ttl),
        nbf_offset: a.nbf_offset,
        user_context,
        jti: None,
        edge_cacheable: Some(a.edge_cacheable),
        key: Some(a.key),
        no_kid: Some(a.no_kid),
        extra_claims,
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    for i in 0..a.count {
        req.jti = match &a.jti {
            Some(j) if a.count > 1 => Some(format!("{j}-{i}")),
            other => other.clone(),
        };
        let claims = req.claims(&a.issuer, clock::now())?;
        writeln!(out, "{}", signer.sign(&claims)?)?;
    }
    out.flush()?;
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    let (store, created) = KeyStore::open(&a.dir, clock::now())?;
    if created {
        eprintln!("created {}", store.path().display());
    }
    let cfg = server::Config {
        issuer: a.issuer,
        cache_max_age: a.cache.cache_max_age,
        edge_ttl: a.cache.edge_ttl,
        grace: a.grace,
        rotate_every: a.rotate_every,
    };
    let app = Arc::new(server::App::new(cfg, store, Arc::new(clock::now)));
    let stop = shutdown_flag()?;
    let running = server::start(app.clone(), &a.listen, 4)?;
    // Tests wait for exactly this line, so print it only once bound, and flush.
    print_line(&format!("listening on http://{}", running.addr))?;

    // Housekeeping once a second; the signal flag is polled more often so
    // SIGTERM/SIGINT end the process promptly with exit code 0.
    let mut last_tick = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            if let Err(e) = app.tick() {
                eprintln!("edge-jwt-issuer: housekeeping failed: {e:#}");
            }
        }
    }
    running.shutdown();
    Ok(())
}

#[cfg(unix)]
fn shutdown_flag() -> Result<Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handler")?;
    }
    Ok(flag)
}

#[cfg(not(unix))]
fn shutdown_flag() -> Result<Arc<std::sync::atomic::AtomicBool>> {
    // Elsewhere the default Ctrl-C behaviour (exit) is good enough.
    Ok(Arc::new(std::sync::atomic::AtomicBool::new(false)))
}
