//! Filter configuration: parsed from JSON (the same bytes as Envoy's wasm
//! `configuration` or Istio's `pluginConfig`), then compiled once into the
//! form the request path uses. Field names mirror Envoy's `jwt_authn`.
use crate::claims::ClaimPolicy;
use crate::extract::Location;
use crate::jwks::KeySet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: a JSON path such as `providers.demo.remote_jwks.http_uri`.
    pub at: String,
    pub what: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() || self.at == "." {
            write!(f, "{}", self.what)
        } else {
            write!(f, "at {}: {}", self.at, self.what)
        }
    }
}

fn err(at: impl Into<String>, what: impl Into<String>) -> ConfigError {
    ConfigError { at: at.into(), what: what.into() }
}

// ---------- raw (serde) shape ----------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    rules: Vec<RawRule>,
    max_token_bytes: Option<usize>,
    realm: Option<String>,
    bypass_cors_preflight: Option<bool>,
    verdict_header: Option<String>,
    reason_header: Option<String>,
    audit_mode: Option<bool>,
    jwt_or_session: Option<RawSession>,
    revocation: Option<RawRevocation>,
    jwt_cache_config: Option<RawJwtCache>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtCache {
    jwt_cache_size: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    cookie: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    http_uri: RawHttpUri,
    refresh_interval: Option<String>,
    max_stale: Option<String>,
    on_stale: Option<String>,
    max_body_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimToHeader {
    header_name: String,
    claim_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    issuer: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    remote_jwks: Option<RawRemote>,
    local_jwks: Option<RawDataSource>,
    from_headers: Option<Vec<RawHeader>>,
    #[serde(default)]
    from_params: Vec<String>,
    #[serde(default)]
    from_cookies: Vec<String>,
    #[serde(default = "yes")]
    forward: bool,
    clock_skew_seconds: Option<u32>,
    #[serde(default = "yes")]
    require_expiration: bool,
    max_lifetime_seconds: Option<u32>,
    #[serde(default)]
    claim_to_headers: Vec<RawClaimToHeader>,
    forward_payload_header: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataSource {
    inline_string: Option<String>,
    filename: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    #[serde(default)]
    value_prefix: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpUri {
    uri: String,
    cluster: String,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryPolicy {
    retry_back_off: Option<RawBackOff>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackOff {
    base_interval: Option<String>,
    max_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    http_uri: RawHttpUri,
    /// (ext) further sources, tried after `http_uri` in order.
    #[serde(default)]
    failover_http_uris: Vec<RawHttpUri>,
    cache_duration: Option<String>,
    retry_policy: Option<RawRetryPolicy>,
    min_cache_duration: Option<String>,
    max_cache_duration: Option<String>,
    refetch_cooldown: Option<String>,
    max_stale: Option<String>,
    max_body_bytes: Option<usize>,
    initial_fetch_wait: Option<String>,
    keys_unavailable_status: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    matcher: RawMatch,
    requires: Option<RawRequirement>,
    #[serde(default)]
    required_scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    prefix: Option<String>,
    path: Option<String>,
    path_separated_prefix: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    provider_name: Option<String>,
    requires_any: Option<RawRequirementList>,
    requires_all: Option<RawRequirementList>,
    allow_missing: Option<Empty>,
    allow_missing_or_failed: Option<Empty>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirementList {
    requirements: Vec<RawRequirement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

// ---------- compiled shape ----------

#[derive(Debug, Clone)]
pub struct Config {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub max_token_bytes: usize,
    pub realm: String,
    pub bypass_cors_preflight: bool,
    /// Request header carrying the verdict ("true"/"false").
    pub verdict_header: String,
    /// Request header carrying why the verdict is not "true".
    pub reason_header: String,
    /// Never deny; mark the verdict and reason for upstream and logs.
    pub audit_mode: bool,
    /// Migration step "JWT or session": a request with no token but with
    /// this cookie passes, marked unverified.
    pub session_cookie: Option<String>,
    pub revocation: Option<Revocation>,
    /// Every header the filter may set, stripped from each incoming request
    /// so a client can never supply one.
    pub owned_headers: Vec<String>,
    /// Verified tokens remembered per VM (0 disables the cache).
    pub jwt_cache_size: usize,
}

pub const DEFAULT_JWT_CACHE_SIZE: usize = 1000;

/// The revocation list feed; fetched and shared like a JWKS source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Fetch policy, reusing the JWKS machinery (one source, fixed TTL).
    pub remote: Remote,
    /// When the list is stale past `max_stale`: deny (fail closed) or allow.
    pub deny_when_stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub header: String,
    /// Dotted path into the claims, e.g. `user_context.role`.
    pub path: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub claims: ClaimPolicy,
    pub locations: Vec<Location>,
    pub forward: bool,
    /// `local_jwks`: the only keys, or bootstrap keys beside `remote_jwks`.
    pub local_keys: Option<Arc<KeySet>>,
    pub remote: Option<Remote>,
    pub claim_to_headers: Vec<ClaimHeader>,
    pub forward_payload_header: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
}

/// `remote_jwks`, with every duration in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub sources: Vec<Source>,
    pub cache_duration_ms: Option<u64>,
    pub min_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub refetch_cooldown_ms: u64,
    pub max_stale_ms: u64,
    pub max_body_bytes: usize,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub initial_fetch_wait_ms: u64,
    pub keys_unavailable_status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matcher: PathMatch,
    pub methods: Vec<String>,
    /// `None` is a bypass rule.
    pub requires: Option<Requirement>,
    pub required_scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Envoy's `path_separated_prefix`: the path itself or anything under
    /// it, so `/public` does not also cover `/publicity`.
    Segment(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Indexes into `Config::providers`; any one of them may vouch.
    pub providers: Vec<usize>,
    /// Absent token passes; a present invalid one is still refused.
    pub allow_missing: bool,
    /// Absent or invalid token passes (unverified).
    pub allow_failed: bool,
}

pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
const MAX_DURATION_SECS: u64 = 315_576_000_000;

/// Parses "5s", "1.5s", "300s" (protobuf JSON Duration) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let num = s.strip_suffix('s')?;
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    // protobuf's Duration maximum (10,000 years): keeps every `now + d` far
    // from overflow.
    if secs > MAX_DURATION_SECS {
        return None;
    }
    let mut ms = secs.checked_mul(1000)?;
    let mut scale = 100;
    for d in frac.bytes().take(3) {
        ms = ms.checked_add(u64::from(d - b'0') * scale)?;
        scale /= 10;
    }
    Some(ms)
}

fn duration(at: &str, v: &Option<String>, default_ms: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default_ms),
        Some(s) => parse_duration_ms(s)
            .ok_or_else(|| err(at, format!("{s:?} is not a duration like \"5s\" or \"1.5s\""))),
    }
}

/// Splits an http(s) URI into the callout's `:authority` and `:path`.
fn split_uri(at: &str, uri: &str) -> Result<(String, String), ConfigError> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .ok_or_else(|| err(at, format!("{uri:?} is not an http:// or https:// URI")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let bad = |c: char| c.is_whitespace() || c.is_control();
    if authority.is_empty() || authority.contains(bad) || path.contains(bad) || authority.contains('@') {
        return Err(err(at, format!("{uri:?} has no usable host")));
    }
    Ok((authority.to_string(), path.to_string()))
}

fn source(at: &str, raw: &RawHttpUri) -> Result<Source, ConfigError> {
    let (authority, path) = split_uri(&format!("{at}.uri"), &raw.uri)?;
    if raw.cluster.is_empty() {
        return Err(err(format!("{at}.cluster"), "must name an Envoy cluster"));
    }
    let timeout_ms = duration(&format!("{at}.timeout"), &raw.timeout, 5_000)?;
    if timeout_ms == 0 {
        return Err(err(format!("{at}.timeout"), "must be greater than 0s"));
    }
    Ok(Source { uri: raw.uri.clone(), cluster: raw.cluster.clone(), authority, path, timeout_ms })
}

fn remote(at: &str, raw: &RawRemote) -> Result<Remote, ConfigError> {
    let mut sources = vec![source(&format!("{at}.http_uri"), &raw.http_uri)?];
    for (i, s) in raw.failover_http_uris.iter().enumerate() {
        sources.push(source(&format!("{at}.failover_http_uris[{i}]"), s)?);
    }
    let d = |name: &str, v: &Option<String>, def| duration(&format!("{at}.{name}"), v, def);
    let back_off = raw.retry_policy.as_ref().and_then(|r| r.retry_back_off.as_ref());
    let r = Remote {
        sources,
        cache_duration_ms: match &raw.cache_duration {
            None => None,
            Some(_) => Some(d("cache_duration", &raw.cache_duration, 0)?),
        },
        min_ttl_ms: d("min_cache_duration", &raw.min_cache_duration, 30_000)?,
        max_ttl_ms: d("max_cache_duration", &raw.max_cache_duration, 86_400_000)?,
        refetch_cooldown_ms: d("refetch_cooldown", &raw.refetch_cooldown, 30_000)?,
        max_stale_ms: d("max_stale", &raw.max_stale, 86_400_000)?,
        max_body_bytes: raw.max_body_bytes.unwrap_or(64 * 1024),
        backoff_base_ms: d(
            "retry_policy.retry_back_off.base_interval",
            &back_off.and_then(|b| b.base_interval.clone()),
            1_000,
        )?,
        backoff_max_ms: d(
            "retry_policy.retry_back_off.max_interval",
            &back_off.and_then(|b| b.max_interval.clone()),
            60_000,
        )?,
        initial_fetch_wait_ms: d("initial_fetch_wait", &raw.initial_fetch_wait, 5_000)?,
        keys_unavailable_status: raw.keys_unavailable_status.unwrap_or(503),
    };
    if r.cache_duration_ms == Some(0) {
        return Err(err(format!("{at}.cache_duration"), "must be greater than 0s"));
    }
    if r.min_ttl_ms == 0 || r.min_ttl_ms > r.max_ttl_ms {
        return Err(err(at, "min_cache_duration must be > 0s and <= max_cache_duration"));
    }
    if r.backoff_base_ms == 0 || r.backoff_base_ms > r.backoff_max_ms {
        return Err(err(format!("{at}.retry_policy"), "base_interval must be > 0s and <= max_interval"));
    }
    if !(1024..=4 * 1024 * 1024).contains(&r.max_body_bytes) {
        return Err(err(format!("{at}.max_body_bytes"), "must be between 1024 and 4194304"));
    }
    if !matches!(r.keys_unavailable_status, 401 | 503) {
        return Err(err(format!("{at}.keys_unavailable_status"), "must be 401 or 503"));
    }
    Ok(r)
}

fn provider(name: &str, raw: &RawProvider) -> Result<Provider, ConfigError> {
    let at = format!("providers.{name}");
    if name.is_empty() {
        return Err(err("providers", "a provider name is empty"));
    }
    let local_keys = match &raw.local_jwks {
        None => None,
        Some(ds) => {
            let at = format!("{at}.local_jwks");
            if ds.filename.is_some() {
                return Err(err(at, "filename is not readable from wasm; use inline_string"));
            }
            let text = ds.inline_string.as_deref().ok_or_else(|| err(&at, "inline_string is required"))?;
            let set = KeySet::parse(text.as_bytes(), 1 << 20)
                .map_err(|e| err(format!("{at}.inline_string"), e.to_string()))?;
            Some(Arc::new(set))
        }
    };
    let remote = raw.remote_jwks.as_ref().map(|r| remote(&format!("{at}.remote_jwks"), r)).transpose()?;
    if local_keys.is_none() && remote.is_none() {
        return Err(err(at, "needs remote_jwks or local_jwks"));
    }
    let mut locations = Vec::new();
    match &raw.from_headers {
        None => locations.push(Location::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }),
        Some(hs) => {
            for (i, h) in hs.iter().enumerate() {
                let name = h.name.trim().to_ascii_lowercase();
                if name.is_empty() || name.starts_with(':') {
                    return Err(err(format!("{at}.from_headers[{i}].name"), "must be a regular header name"));
                }
                locations.push(Location::Header { name, prefix: h.value_prefix.clone() });
            }
        }
    }
    locations.extend(raw.from_params.iter().map(|p| Location::Param(p.clone())));
    locations.extend(raw.from_cookies.iter().map(|c| Location::Cookie(c.clone())));
    if locations.is_empty() {
        return Err(err(at, "no token location: from_headers, from_params and from_cookies are all empty"));
    }
    if raw.audiences.iter().any(String::is_empty) {
        return Err(err(format!("{at}.audiences"), "an audience is empty"));
    }
    let mut claim_to_headers = Vec::new();
    for (i, c) in raw.claim_to_headers.iter().enumerate() {
        let at = format!("{at}.claim_to_headers[{i}]");
        let header = header_name(&format!("{at}.header_name"), &c.header_name)?;
        let path: Vec<String> = c.claim_name.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(err(format!("{at}.claim_name"), "is empty or has an empty segment"));
        }
        claim_to_headers.push(ClaimHeader { header, path });
    }
    let forward_payload_header = raw
        .forward_payload_header
        .as_deref()
        .map(|h| header_name(&format!("{at}.forward_payload_header"), h))
        .transpose()?;
    Ok(Provider {
        name: name.to_string(),
        claims: ClaimPolicy {
            issuer: raw.issuer.clone().filter(|s| !s.is_empty()),
            audiences: raw.audiences.clone(),
            clock_skew_seconds: i64::from(raw.clock_skew_seconds.unwrap_or(60)),
            require_expiration: raw.require_expiration,
            max_lifetime_seconds: raw.max_lifetime_seconds.map(i64::from),
        },
        locations,
        forward: raw.forward,
        local_keys,
        remote,
        claim_to_headers,
        forward_payload_header,
    })
}

/// A lower-cased header name the filter may set: an HTTP token, not a
/// pseudo-header, and not one that would break the request.
fn header_name(at: &str, name: &str) -> Result<String, ConfigError> {
    let n = name.trim().to_ascii_lowercase();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if n.is_empty() || !n.chars().all(token) {
        return Err(err(at, format!("{name:?} is not a valid header name")));
    }
    if matches!(n.as_str(), "host" | "content-length" | "transfer-encoding" | "connection" | "te" | "upgrade") {
        return Err(err(at, format!("{name:?} may not be set by the filter")));
    }
    Ok(n)
}

fn revocation(raw: &RawRevocation) -> Result<Revocation, ConfigError> {
    let at = "revocation";
    let source = source(&format!("{at}.http_uri"), &raw.http_uri)?;
    let refresh = duration(&format!("{at}.refresh_interval"), &raw.refresh_interval, 30_000)?;
    if refresh == 0 {
        return Err(err(format!("{at}.refresh_interval"), "must be greater than 0s"));
    }
    let deny_when_stale = match raw.on_stale.as_deref() {
        None | Some("deny") => true,
        Some("allow") => false,
        Some(other) => return Err(err(format!("{at}.on_stale"), format!("{other:?} is not \"deny\" or \"allow\""))),
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(1 << 20);
    if !(1024..=4 * 1024 * 1024).contains(&max_body_bytes) {
        return Err(err(format!("{at}.max_body_bytes"), "must be between 1024 and 4194304"));
    }
    Ok(Revocation {
        remote: Remote {
            sources: vec![source],
            cache_duration_ms: Some(refresh),
            min_ttl_ms: refresh,
            max_ttl_ms: refresh,
            refetch_cooldown_ms: refresh,
            max_stale_ms: duration(&format!("{at}.max_stale"), &raw.max_stale, 120_000)?,
            max_body_bytes,
            backoff_base_ms: 1_000,
            backoff_max_ms: refresh.max(1_000),
            initial_fetch_wait_ms: 5_000,
            keys_unavailable_status: 503,
        },
        deny_when_stale,
    })
}

fn requirement(
    at: &str,
    raw: &RawRequirement,
    names: &BTreeMap<&str, usize>,
    out: &mut Requirement,
    nested: bool,
) -> Result<(), ConfigError> {
    let set = [
        raw.provider_name.is_some(),
        raw.requires_any.is_some(),
        raw.requires_all.is_some(),
        raw.allow_missing.is_some(),
        raw.allow_missing_or_failed.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        return Err(err(at, "exactly one of provider_name, requires_any, allow_missing, allow_missing_or_failed"));
    }
    if raw.requires_all.is_some() {
        return Err(err(format!("{at}.requires_all"), "is not supported; use one provider per token"));
    }
    if let Some(name) = &raw.provider_name {
        let idx = names
            .get(name.as_str())
            .ok_or_else(|| err(format!("{at}.provider_name"), format!("unknown provider {name:?}")))?;
        out.providers.push(*idx);
    }
    if raw.allow_missing.is_some() {
        out.allow_missing = true;
    }
    if raw.allow_missing_or_failed.is_some() {
        out.allow_missing = true;
        out.allow_failed = true;
    }
    if let Some(list) = &raw.requires_any {
        if nested {
            return Err(err(at, "nested requires_any is not supported"));
        }
        if list.requirements.is_empty() {
            return Err(err(format!("{at}.requires_any"), "requirements is empty"));
        }
        for (i, r) in list.requirements.iter().enumerate() {
            requirement(&format!("{at}.requires_any.requirements[{i}]"), r, names, out, true)?;
        }
    }
    Ok(())
}

fn rule(i: usize, raw: &RawRule, names: &BTreeMap<&str, usize>) -> Result<Rule, ConfigError> {
    let at = format!("rules[{i}]");
    let m = &raw.matcher;
    let matcher = match (&m.prefix, &m.path, &m.path_separated_prefix) {
        (Some(p), None, None) => PathMatch::Prefix(p.clone()),
        (None, Some(p), None) => PathMatch::Exact(p.clone()),
        (None, None, Some(p)) => {
            if !p.starts_with('/') || p.ends_with('/') || p.contains(['?', '#']) {
                return Err(err(
                    format!("{at}.match.path_separated_prefix"),
                    "must start with '/', not end with '/', and hold no '?' or '#'",
                ));
            }
            PathMatch::Segment(p.clone())
        }
        _ => return Err(err(format!("{at}.match"), "needs exactly one of prefix, path, path_separated_prefix")),
    };
    let requires = match &raw.requires {
        None => None,
        Some(r) => {
            let mut out = Requirement { providers: Vec::new(), allow_missing: false, allow_failed: false };
            requirement(&format!("{at}.requires"), r, names, &mut out, false)?;
            if out.providers.is_empty() {
                return Err(err(format!("{at}.requires"), "names no provider"));
            }
            Some(out)
        }
    };
    if requires.is_none() && !raw.required_scopes.is_empty() {
        return Err(err(format!("{at}.required_scopes"), "needs requires"));
    }
    Ok(Rule {
        matcher,
        methods: raw.matcher.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        requires,
        required_scopes: raw.required_scopes.clone(),
    })
}

impl Config {
    /// Parses and compiles. The error names the JSON path and the problem.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            err(path, e.into_inner().to_string())
        })?;
        // Nothing may follow the document: a stray "}" before "rules" must not
        // silently leave a config with no rules.
        de.end().map_err(|e| err("", format!("trailing characters after the JSON document: {e}")))?;
        Self::compile(&raw)
    }

    fn compile(raw: &RawConfig) -> Result<Config, ConfigError> {
        if raw.providers.is_empty() {
            return Err(err("providers", "at least one provider is required"));
        }
        let mut providers = Vec::new();
        let mut names = BTreeMap::new();
        for (i, (name, p)) in raw.providers.iter().enumerate() {
            providers.push(provider(name, p)?);
            names.insert(name.as_str(), i);
        }
        let rules = raw
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(i, r, &names))
            .collect::<Result<Vec<_>, _>>()?;
        let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if !(256..=1 << 20).contains(&max_token_bytes) {
            return Err(err("max_token_bytes", "must be between 256 and 1048576"));
        }
        let realm = raw.realm.clone().unwrap_or_else(|| "edge-jwt".into());
        if realm.contains(['"', '\\']) || realm.contains(|c: char| c.is_control()) {
            return Err(err("realm", "may not contain quotes, backslashes or control characters"));
        }
        let verdict_header = header_name("verdict_header", raw.verdict_header.as_deref().unwrap_or("x-jwt-verified"))?;
        let reason_header = header_name("reason_header", raw.reason_header.as_deref().unwrap_or("x-jwt-reason"))?;
        let session_cookie = match &raw.jwt_or_session {
            None => None,
            Some(s) if s.cookie.is_empty() || s.cookie.contains([';', '=', ' ']) => {
                return Err(err("jwt_or_session.cookie", "must be a cookie name"));
            }
            Some(s) => Some(s.cookie.clone()),
        };
        let revocation = raw.revocation.as_ref().map(revocation).transpose()?;
        let jwt_cache_size = raw.jwt_cache_config.as_ref().map_or(DEFAULT_JWT_CACHE_SIZE, |c| c.jwt_cache_size);
        if jwt_cache_size > 100_000 {
            return Err(err("jwt_cache_config.jwt_cache_size", "must be at most 100000"));
        }
        let mut owned_headers = vec![verdict_header.clone(), reason_header.clone()];
        for p in &providers {
            owned_headers.extend(p.claim_to_headers.iter().map(|c| c.header.clone()));
            owned_headers.extend(p.forward_payload_header.iter().cloned());
        }
        owned_headers.sort();
        owned_headers.dedup();
        for p in &providers {
            for loc in &p.locations {
                if let Location::Header { name, .. } = loc {
                    if owned_headers.contains(name) {
                        return Err(err(format!("providers.{}.from_headers", p.name), format!("{name:?} is also a header the filter sets")));
                    }
                }
            }
        }
        Ok(Config {
            providers,
            rules,
            max_token_bytes,
            realm,
            bypass_cors_preflight: raw.bypass_cors_preflight.unwrap_or(false),
            verdict_header,
            reason_header,
            audit_mode: raw.audit_mode.unwrap_or(false),
            session_cookie,
            revocation,
            owned_headers,
            jwt_cache_size,
        })
    }
}

impl Rule {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        // Query strings never take part in matching, as in jwt_authn.
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let path_ok = match &self.matcher {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Segment(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        };
        path_ok && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = r#"{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\",\"kid\":\"a\"}]}"#;

    fn cfg(providers: &str, rules: &str) -> Result<Config, ConfigError> {
        Config::from_json(format!(r#"{{"providers":{{{providers}}},"rules":[{rules}]}}"#).as_bytes())
    }

    fn remote_provider(extra: &str) -> String {
        format!(
            r#""p":{{"issuer":"https://i","audiences":["api"],"remote_jwks":{{"http_uri":{{"uri":"http://127.0.0.1:9000/.well-known/jwks.json","cluster":"issuer","timeout":"1.5s"}}{extra}}}}}"#
        )
    }

    #[test]
    fn full_example_compiles() {
        let c = cfg(
            &remote_provider(r#","cache_duration":"300s""#),
            r#"{"match":{"prefix":"/public"}},{"match":{"prefix":"/","methods":["get"]},"requires":{"provider_name":"p"},"required_scopes":["read"]}"#,
        )
        .expect("config");
        let p = &c.providers[0];
        let r = p.remote.as_ref().expect("remote");
        assert_eq!(r.sources[0].authority, "127.0.0.1:9000");
        assert_eq!(r.sources[0].path, "/.well-known/jwks.json");
        assert_eq!(r.sources[0].timeout_ms, 1500);
        assert_eq!(r.cache_duration_ms, Some(300_000));
        assert_eq!(p.claims.clock_skew_seconds, 60);
        assert!(p.claims.require_expiration);
        assert_eq!(p.locations, vec![Location::Header { name: "authorization".into(), prefix: "Bearer ".into() }]);
        assert_eq!(c.rules[0].requires, None);
        assert_eq!(c.rules[1].methods, vec!["GET".to_string()]);
        assert!(c.rules[1].matches("GET", "/x?y=1"));
        assert!(!c.rules[1].matches("POST", "/x"));
        assert_eq!(c.max_token_bytes, DEFAULT_MAX_TOKEN_BYTES);
    }

    #[test]
    fn local_and_requires_any() {
        let c = cfg(
            &format!(r#""l":{{"local_jwks":{{"inline_string":"{JWKS}"}},"from_headers":[{{"name":"X-Token"}}],"from_params":["access_token"]}}"#),
            r#"{"match":{"path":"/opt"},"requires":{"requires_any":{"requirements":[{"provider_name":"l"},{"allow_missing":{}}]}}}"#,
        )
        .expect("config");
        assert!(c.providers[0].local_keys.is_some());
        assert_eq!(c.providers[0].locations.len(), 2);
        let req = c.rules[0].requires.as_ref().expect("req");
        assert!(req.allow_missing && !req.allow_failed);
        assert!(c.rules[0].matches("GET", "/opt"));
        assert!(!c.rules[0].matches("GET", "/opt/x"));
    }

    #[test]
    fn refusals_say_what_and_where() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "expected"),
            (r#"{"providers":{}}"#.into(), "at least one provider"),
            (format!(r#"{{"providers":{{{}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"provider_name":"nope"}}}}]}}"#, remote_provider("")), "rules[0].requires.provider_name: unknown provider"),
            (format!(r#"{{"providers":{{{}}},"rulez":[]}}"#, remote_provider("")), "unknown field `rulez`"),
            (format!(r#"{{"providers":{{{}}}}}"#, remote_provider(r#","cache_duration":"5 minutes""#)), "providers.p.remote_jwks.cache_duration"),
            (r#"{"providers":{"p":{"issuer":"x"}}}"#.into(), "needs remote_jwks or local_jwks"),
            (r#"{"providers":{"p":{"local_jwks":{"inline_string":"{\"keys\":[]}"}}}}"#.into(), "providers.p.local_jwks.inline_string: no usable Ed25519 key"),
            (r#"{"providers":{"p":{"local_jwks":{"filename":"/etc/jwks.json"}}}}"#.into(), "filename is not readable"),
            (r#"{"providers":{"p":{"remote_jwks":{"http_uri":{"uri":"ftp://x/","cluster":"c"}}}}}"#.into(), "providers.p.remote_jwks.http_uri.uri"),
            (r#"{"providers":{"p":{"remote_jwks":{"http_uri":{"uri":"http://x/"}}}}}"#.into(), "missing field `cluster`"),
            (format!(r#"{{"providers":{{{}}},"rules":[{{"match":{{}}}}]}}"#, remote_provider("")), "rules[0].match"),
            (format!(r#"{{"providers":{{{}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"requires_all":{{"requirements":[]}}}}}}]}}"#, remote_provider("")), "not supported"),
            (format!(r#"{{"providers":{{{}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"allow_missing":{{}}}}}}]}}"#, remote_provider("")), "names no provider"),
            (format!(r#"{{"providers":{{{}}}}}"#, remote_provider(r#","keys_unavailable_status":500"#)), "401 or 503"),
            (format!(r#"{{"providers":{{{}}},"max_token_bytes":10}}"#, remote_provider("")), "max_token_bytes"),
            (format!(r#"{{"providers":{{{}}}}} trailing garbage"#, remote_provider("")), "trailing characters"),
            (format!(r#"{{"providers":{{{}}}}},"rules":[]}}"#, remote_provider("")), "trailing characters"),
        ];
        for (doc, want) in cases {
            let e = Config::from_json(doc.as_bytes()).expect_err(&doc).to_string();
            assert!(e.contains(want), "{doc}\n  gave: {e}\n  want: {want}");
        }
    }

    #[test]
    fn path_separated_prefix() {
        let c = cfg(&remote_provider(""), r#"{"match":{"path_separated_prefix":"/public"}}"#).expect("config");
        let r = &c.rules[0];
        for ok in ["/public", "/public/", "/public/x", "/public?x=1"] {
            assert!(r.matches("GET", ok), "{ok}");
        }
        for no in ["/publicity", "/public-internal", "/Public", "/", "/x/public"] {
            assert!(!r.matches("GET", no), "{no}");
        }
        for bad in ["public", "/public/", "/p?x"] {
            let doc = format!(r#"{{"match":{{"path_separated_prefix":"{bad}"}}}}"#);
            assert!(cfg(&remote_provider(""), &doc).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5s"), Some(5000));
        assert_eq!(parse_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_duration_ms("0.001s"), Some(1));
        assert_eq!(parse_duration_ms("300s"), Some(300_000));
        assert_eq!(parse_duration_ms("315576000000s"), Some(315_576_000_000_000));
        for bad in ["", "s", "5", "5m", "-1s", "1.s5", " 5s", "1e3s", "99999999999999999999s", "315576000001s", "18446744073709551s"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }
}
