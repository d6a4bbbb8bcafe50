//! Writes the committed seed corpora (fuzz/seeds/<target>/) and libFuzzer
//! dictionaries (fuzz/dict/<target>.dict). Deterministic: running it again
//! gives the same files.
//!
//!   cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//!
//! Config seeds are extracted from docs/CONFIG.md (```json blocks) and from
//! the JSON embedded in envoy/*.yaml (`value: |` block scalars), plus
//! hand-written variants that reach every config section.
use edge_jwt_fuzz::{b64url_encode, jwks_json, sign_token, Who, NOW};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

struct Out {
    dir: PathBuf,
    n: usize,
}

impl Out {
    fn new(target: &str) -> Out {
        let dir = root().join("fuzz/seeds").join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("clean seeds");
        }
        fs::create_dir_all(&dir).expect("mkdir seeds");
        Out { dir, n: 0 }
    }

    fn put(&mut self, name: &str, bytes: impl AsRef<[u8]>) {
        self.n += 1;
        let file = self.dir.join(format!("{:03}-{name}", self.n));
        fs::write(file, bytes).expect("write seed");
    }
}

fn claims(extra: &str) -> String {
    format!(
        r#"{{"iss":"https://issuer.example","aud":["api"],"sub":"user-1","iat":{},"exp":{}{extra}}}"#,
        NOW - 10,
        NOW + 890
    )
}

fn token_seeds() {
    let mut o = Out::new("token_verify");
    let h1 = br#"{"alg":"EdDSA","kid":"k1","typ":"JWT"}"#;
    let h2 = br#"{"alg":"Ed25519","kid":"k2"}"#;
    let good = claims(r#","scope":"read write","user_context":{"id":"u","role":"admin"}"#);
    o.put("valid-k1", sign_token(h1, good.as_bytes(), Who::K1));
    o.put("valid-k2-ed25519", sign_token(h2, good.as_bytes(), Who::K2));
    let cases: &[(&str, &[u8], String, Who)] = &[
        ("expired", h1, format!(r#"{{"iss":"https://issuer.example","aud":"api","exp":{}}}"#, NOW - 3600), Who::K1),
        ("nbf-future", h1, claims(&format!(r#","nbf":{}"#, NOW + 3600)), Who::K1),
        ("aud-web-string", h1, format!(r#"{{"iss":"https://issuer.example","aud":"web","exp":{}}}"#, NOW + 60), Who::K1),
        ("aud-wrong", h1, format!(r#"{{"iss":"https://issuer.example","aud":["x"],"exp":{}}}"#, NOW + 60), Who::K1),
        ("float-exp", h1, format!(r#"{{"iss":"https://issuer.example","aud":"api","exp":{}.75}}"#, NOW + 60), Who::K1),
        ("lifetime-long", h1, format!(r#"{{"iss":"https://issuer.example","aud":"api","iat":{},"exp":{}}}"#, NOW, NOW + 90_000), Who::K1),
        ("no-exp", h1, r#"{"iss":"https://issuer.example","aud":"api"}"#.into(), Who::K1),
        ("exp-string", h1, r#"{"iss":"https://issuer.example","aud":"api","exp":"1760000100"}"#.into(), Who::K1),
        ("exp-huge", h1, r#"{"iss":"https://issuer.example","aud":"api","exp":1e300}"#.into(), Who::K1),
        ("dup-claim", h1, format!(r#"{{"iss":"x","iss":"https://issuer.example","aud":"api","exp":{}}}"#, NOW + 60), Who::K1),
        ("no-kid", br#"{"alg":"EdDSA"}"#, good.clone(), Who::K1),
        ("unknown-kid", br#"{"alg":"EdDSA","kid":"k9"}"#, good.clone(), Who::K1),
        ("wrong-key-for-kid", h2, good.clone(), Who::K1),
        ("attacker", h1, good.clone(), Who::Attacker),
        ("crit", br#"{"alg":"EdDSA","kid":"k1","crit":["exp"]}"#, good.clone(), Who::K1),
        ("enc", br#"{"alg":"EdDSA","kid":"k1","enc":"A128GCM"}"#, good.clone(), Who::K1),
        ("dup-alg", br#"{"alg":"HS256","alg":"EdDSA","kid":"k1"}"#, good.clone(), Who::K1),
        ("alg-none", br#"{"alg":"none","kid":"k1"}"#, good.clone(), Who::K1),
        ("kid-number", br#"{"alg":"EdDSA","kid":1}"#, good.clone(), Who::K1),
        ("header-array", b"[1]", good.clone(), Who::K1),
        ("payload-not-json", h1, "hello".into(), Who::K1),
    ];
    for (name, h, p, who) in cases {
        o.put(name, sign_token(h, p.as_bytes(), *who));
    }
    let valid = String::from_utf8(sign_token(h1, good.as_bytes(), Who::K1)).expect("ascii");
    let (head, rest) = valid.split_once('.').expect("dot");
    let (payload, sig) = rest.split_once('.').expect("dot");
    o.put("hs256-mac", format!("{}.{payload}.{}", b64url_encode(br#"{"alg":"HS256","kid":"k1"}"#), b64url_encode(&[0xAB; 32])));
    o.put("padding", format!("{head}=.{payload}.{sig}"));
    o.put("four-parts", format!("{valid}.x"));
    o.put("two-parts", format!("{head}.{payload}"));
    o.put("std-alphabet", format!("{head}.{payload}+.{sig}"));
    o.put("noncanonical-sig", format!("{head}.{payload}.{}B", &sig[..85]));
    o.put("empty-header", format!(".{payload}.{sig}"));
    o.put("empty", "");
    o.put("dots", "..");
    o.put("too-large", "a".repeat(8193));

    // Structured: [ctl, pos lo, pos hi, xor] header \0 payload.
    let mut s = Out::new("token_verify_structured");
    let mut put = |name: &str, ctl: u8, header: &[u8], payload: &str| {
        let mut b = vec![ctl, 7, 0, 1];
        b.extend_from_slice(header);
        b.push(0);
        b.extend_from_slice(payload.as_bytes());
        s.put(name, b);
    };
    put("template-k1-valid", 0x00, b"", &good);
    put("template-k2-ed25519", 0x09, b"", &good);
    put("template-attacker", 0x02, b"", &good);
    put("template-tampered", 0x10, b"", &good);
    put("template-kid-mismatch", 0x20, b"", &good);
    put("template-no-kid", 0x40, b"", &good);
    for (name, extra) in [
        ("expired", format!(r#","exp":{}"#, NOW - 100)),
        ("exp-at-skew", format!(r#","exp":{}"#, NOW - 60)),
        ("nbf-skew", format!(r#","nbf":{}"#, NOW + 61)),
        ("iat-future", format!(r#","iat":{}"#, NOW + 61)),
        ("exp-float", format!(r#","exp":{}.999"#, NOW)),
        ("exp-negative", r#","exp":-1"#.into()),
        ("exp-u64", r#","exp":18446744073709551615"#.into()),
        ("exp-max-date", r#","exp":253402300799"#.into()),
        ("aud-number", r#","aud":1"#.into()),
        ("aud-mixed", r#","aud":[1,null,"web"]"#.into()),
        ("sub-number", r#","sub":7"#.into()),
        ("jti-object", r#","jti":{}"#.into()),
        ("jti-string", r#","jti":"id-1""#.into()),
        ("iss-wrong", r#","iss":"https://issuer.example/""#.into()),
    ] {
        // Later members replace the base ones only through duplicates, which
        // the filter refuses; build each payload whole instead.
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&good).expect("json");
        let patch: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!("{{{}}}", &extra[1..])).expect("patch");
        v.extend(patch);
        put(name, 0x00, b"", &serde_json::to_string(&v).expect("json"));
    }
    put("no-claims", 0x00, b"", "{}");
    put("payload-array", 0x00, b"", "[]");
    put("payload-dup", 0x00, b"", r#"{"exp":1,"exp":2}"#);
    put("raw-header-k1", 0x04, br#"{"alg":"EdDSA","kid":"k1"}"#, &good);
    put("raw-header-crit", 0x04, br#"{"alg":"EdDSA","kid":"k1","crit":[]}"#, &good);
    put("raw-header-dup-kid", 0x04, br#"{"alg":"EdDSA","kid":"k2","kid":"k1"}"#, &good);
    put("raw-header-alg-array", 0x04, br#"{"alg":["EdDSA"],"kid":"k1"}"#, &good);
    put("raw-header-unicode-kid", 0x04, br#"{"alg":"EdDSA","kid":"\u006b1"}"#, &good);
}

fn jwks_seeds() {
    let mut o = Out::new("jwks_parse");
    let x1 = b64url_encode(Who::K1.verifying_key().as_bytes());
    let x2 = b64url_encode(Who::K2.verifying_key().as_bytes());
    let rfc8037 = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    o.put("fixed", jwks_json());
    o.put(
        "design",
        format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{rfc8037}","kid":"2025-09-01","use":"sig","alg":"EdDSA"}},{{"kty":"OKP","crv":"Ed25519","x":"{x2}","kid":"2025-10-01"}}],"cache_max_age":3600,"edge_ttl":300}}"#
        ),
    );
    let one = |jwk: &str| format!(r#"{{"keys":[{jwk}]}}"#);
    for (name, jwk) in [
        ("no-kid", format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x1}"}}"#)),
        ("key-ops", format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x1}","kid":"a","key_ops":["verify"]}}"#)),
        ("key-ops-sign", format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x1}","kid":"a","key_ops":["sign"]}}"#)),
        ("use-enc", format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x1}","kid":"a","use":"enc"}}"#)),
        ("alg-es256", format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x1}","kid":"a","alg":"ES256"}}"#)),
        ("private-d", format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x1}","kid":"a","d":"AAAA"}}"#)),
        ("kid-number", format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x1}","kid":7}}"#)),
        ("x25519", format!(r#"{{"kty":"OKP","crv":"X25519","x":"{x1}","kid":"a"}}"#)),
        ("rsa", r#"{"kty":"RSA","n":"sXch","e":"AQAB","kid":"r"}"#.to_string()),
        ("ec", r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"e"}"#.to_string()),
        ("x-short", r#"{"kty":"OKP","crv":"Ed25519","x":"AQ","kid":"s"}"#.to_string()),
        ("x-padded", format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x1}=","kid":"p"}}"#)),
        ("x-weak", r#"{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","kid":"w"}"#.to_string()),
        ("x-noncanonical", r#"{"kty":"OKP","crv":"Ed25519","x":"7P___________________________________________38","kid":"n"}"#.to_string()),
        ("not-object", "42".to_string()),
    ] {
        o.put(name, one(&jwk));
    }
    o.put(
        "dup-kid",
        format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x1}","kid":"k"}},{{"kty":"OKP","crv":"Ed25519","x":"{x2}","kid":"k"}}]}}"#),
    );
    o.put("dup-member", format!(r#"{{"keys":[],"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x1}"}}]}}"#));
    o.put("empty-keys", r#"{"keys":[]}"#);
    o.put("no-keys", r#"{"cache_max_age":10}"#);
    o.put("array", "[]");
    o.put("html", "<html>");
}

/// ```json blocks of a Markdown file.
fn md_json_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```json") => cur = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => out.extend(cur.take()),
            (Some(buf), _) => {
                buf.push_str(line);
                buf.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// `value: |` block scalars of a YAML file (the filter configs Envoy embeds).
fn yaml_value_blocks(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.trim_end().ends_with("value: |") {
            let base = indent(l);
            let mut block = Vec::new();
            i += 1;
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > base) {
                block.push(lines[i]);
                i += 1;
            }
            let cut = block.iter().filter(|l| !l.trim().is_empty()).map(|l| indent(l)).min().unwrap_or(0);
            let text: Vec<&str> = block.iter().map(|l| if l.len() >= cut { &l[cut..] } else { "" }).collect();
            out.push(text.join("\n").trim().to_string() + "\n");
        } else {
            i += 1;
        }
    }
    out
}

fn config_seeds() {
    let mut o = Out::new("config_parse");
    let r = root();
    for (i, b) in md_json_blocks(&fs::read_to_string(r.join("docs/CONFIG.md")).expect("CONFIG.md")).iter().enumerate() {
        o.put(&format!("config-md-{i}.json"), b);
        // The doc elides the JWKS as `[...]`; a copy with real keys parses further.
        let keys = serde_json::to_string(&jwks_json()).expect("json string");
        let filled = b.replace(r#""{\"keys\":[...]}""#, &keys);
        if filled != *b {
            o.put(&format!("config-md-{i}-keys.json"), filled);
        }
    }
    let mut yamls: Vec<PathBuf> = fs::read_dir(r.join("envoy"))
        .expect("envoy/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    yamls.sort();
    for y in yamls {
        let stem = y.file_stem().and_then(|s| s.to_str()).unwrap_or("envoy").to_string();
        for (i, b) in yaml_value_blocks(&fs::read_to_string(&y).expect("yaml")).iter().enumerate() {
            o.put(&format!("{stem}-{i}.json"), b);
        }
    }
    let jwks = serde_json::to_string(&jwks_json()).expect("json string");
    let remote = r#""remote_jwks":{"http_uri":{"uri":"http://127.0.0.1:9000/.well-known/jwks.json","cluster":"issuer","timeout":"1.5s"}"#;
    let hand = [
        ("minimal-local", format!(r#"{{"providers":{{"l":{{"local_jwks":{{"inline_string":{jwks}}}}}}}}}"#)),
        (
            "remote-lifecycle",
            format!(
                r#"{{"providers":{{"p":{{"issuer":"https://i","audiences":["api"],{remote},"failover_http_uris":[{{"uri":"https://b.example/jwks","cluster":"b"}}],"min_cache_duration":"1s","max_cache_duration":"600s","refetch_cooldown":"10s","max_stale":"3600s","max_body_bytes":4096,"retry_policy":{{"retry_back_off":{{"base_interval":"0.5s","max_interval":"30s"}}}},"initial_fetch_wait":"0.25s","keys_unavailable_status":401}}}}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"provider_name":"p"}}}}]}}"#
            ),
        ),
        (
            "everything",
            format!(
                r#"{{"providers":{{"a":{{"issuer":"https://a","local_jwks":{{"inline_string":{jwks}}},"from_headers":[{{"name":"X-Token","value_prefix":"Bearer "}}],"from_params":["access_token"],"from_cookies":["jwt"],"forward":false,"clock_skew_seconds":30,"require_expiration":false,"max_lifetime_seconds":3600,"claim_to_headers":[{{"header_name":"x-jwt-role","claim_name":"user_context.role"}}],"forward_payload_header":"x-jwt-payload"}},"b":{{{remote},"cache_duration":"300s"}}}}}},"rules":[{{"match":{{"prefix":"/public"}}}},{{"match":{{"path":"/opt","methods":["get","post"]}},"requires":{{"requires_any":{{"requirements":[{{"provider_name":"a"}},{{"provider_name":"b"}},{{"allow_missing":{{}}}}]}}}}}},{{"match":{{"prefix":"/"}},"requires":{{"provider_name":"a"}},"required_scopes":["read"]}}],"max_token_bytes":4096,"realm":"api","bypass_cors_preflight":true,"verdict_header":"x-verified","reason_header":"x-why","audit_mode":true,"jwt_or_session":{{"cookie":"session"}},"revocation":{{"http_uri":{{"uri":"http://127.0.0.1:9000/revoked","cluster":"issuer"}},"refresh_interval":"30s","max_stale":"120s","on_stale":"allow","max_body_bytes":2048}},"jwt_cache_config":{{"jwt_cache_size":10}}}}"#
            ),
        ),
        (
            "allow-failed",
            format!(r#"{{"providers":{{"p":{{{remote}}}}}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"requires_any":{{"requirements":[{{"provider_name":"p"}},{{"allow_missing_or_failed":{{}}}}]}}}}}}]}}"#),
        ),
        ("refused-requires-all", format!(r#"{{"providers":{{"p":{{{remote}}}}}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"requires_all":{{"requirements":[]}}}}}}]}}"#)),
        ("refused-owned-header", format!(r#"{{"providers":{{"p":{{{remote}}},"from_headers":[{{"name":"x-jwt-verified"}}]}}}}}}"#)),
        ("refused-min-gt-max", format!(r#"{{"providers":{{"p":{{{remote},"min_cache_duration":"100s","max_cache_duration":"10s"}}}}}}}}"#)),
        ("refused-unknown-field", r#"{"providers":{},"rulez":[]}"#.to_string()),
        ("huge-duration", format!(r#"{{"providers":{{"p":{{{remote},"max_cache_duration":"18446744073709551s"}}}}}}}}"#)),
    ];
    for (name, doc) in hand {
        o.put(&format!("{name}.json"), doc);
    }
}

fn cache_seeds() {
    // cache_control takes `arbitrary` input: the leading bytes become the
    // first Cache-Control string; the rest only needs to be varied.
    let mut o = Out::new("cache_control");
    for (i, cc) in [
        "public, max-age=300",
        "no-cache",
        "no-store, max-age=99",
        "max-age=\"60\"",
        "MAX-AGE=0",
        "max-age=abc, s-maxage=10",
        "max-age=100, max-age=50",
        "max-age=18446744073709551616",
    ]
    .iter()
    .enumerate()
    {
        let mut b = cc.as_bytes().to_vec();
        b.extend((0..64u8).map(|k| k.wrapping_mul(37).wrapping_add(i as u8)));
        b.push(cc.len() as u8);
        o.put(&format!("cc-{i}"), b);
    }
    o.put("records", b"EJ1 1 2 3\n{\"keys\":[]}\nC1 9 7 2 5 4 1 1 max-age=300 1s 30s 86400s");
}

fn dict(target: &str, entries: &[&str]) {
    let dir = root().join("fuzz/dict");
    fs::create_dir_all(&dir).expect("mkdir dict");
    let mut text = format!("# libFuzzer dictionary for {target} (written by examples/gen_seeds.rs)\n");
    for e in entries {
        let mut esc = String::new();
        for b in e.bytes() {
            match b {
                b'"' => esc.push_str("\\\""),
                b'\\' => esc.push_str("\\\\"),
                0x20..=0x7e => esc.push(b as char),
                _ => esc.push_str(&format!("\\x{b:02X}")),
            }
        }
        text.push_str(&format!("\"{esc}\"\n"));
    }
    fs::write(dir.join(format!("{target}.dict")), text).expect("write dict");
}

fn dicts() {
    let json = ["{", "}", "[", "]", ":", ",", "\"", "null", "true", "false", "-1", "0", "1e3", "1.5", "\\u0000"];
    let claims = [
        "\"alg\"", "\"EdDSA\"", "\"Ed25519\"", "\"kid\"", "\"k1\"", "\"k2\"", "\"typ\"", "\"crit\"", "\"enc\"",
        "\"iss\"", "\"https://issuer.example\"", "\"aud\"", "\"api\"", "\"web\"", "\"exp\"", "\"nbf\"", "\"iat\"",
        "1760000000", "1760000060", "1760086400", "253402300799", "253402300800", "18446744073709551615",
        "9223372036854775807",
    ];
    let jwk = [
        "\"keys\"", "\"kty\"", "\"OKP\"", "\"crv\"", "\"Ed25519\"", "\"x\"", "\"kid\"", "\"use\"", "\"sig\"",
        "\"alg\"", "\"EdDSA\"", "\"key_ops\"", "\"verify\"", "\"d\"", "\"cache_max_age\"", "\"edge_ttl\"",
    ];
    let config = [
        "\"providers\"", "\"rules\"", "\"issuer\"", "\"audiences\"", "\"remote_jwks\"", "\"local_jwks\"",
        "\"inline_string\"", "\"filename\"", "\"http_uri\"", "\"uri\"", "\"cluster\"", "\"timeout\"",
        "\"failover_http_uris\"", "\"cache_duration\"", "\"min_cache_duration\"", "\"max_cache_duration\"",
        "\"refetch_cooldown\"", "\"max_stale\"", "\"max_body_bytes\"", "\"retry_policy\"", "\"retry_back_off\"",
        "\"base_interval\"", "\"max_interval\"", "\"initial_fetch_wait\"", "\"keys_unavailable_status\"",
        "\"from_headers\"", "\"name\"", "\"value_prefix\"", "\"from_params\"", "\"from_cookies\"", "\"forward\"",
        "\"clock_skew_seconds\"", "\"require_expiration\"", "\"max_lifetime_seconds\"", "\"claim_to_headers\"",
        "\"header_name\"", "\"claim_name\"", "\"forward_payload_header\"", "\"match\"", "\"prefix\"", "\"path\"",
        "\"methods\"", "\"requires\"", "\"provider_name\"", "\"requires_any\"", "\"requires_all\"",
        "\"requirements\"", "\"allow_missing\"", "\"allow_missing_or_failed\"", "\"required_scopes\"",
        "\"max_token_bytes\"", "\"realm\"", "\"bypass_cors_preflight\"", "\"verdict_header\"", "\"reason_header\"",
        "\"audit_mode\"", "\"jwt_or_session\"", "\"cookie\"", "\"revocation\"", "\"refresh_interval\"",
        "\"on_stale\"", "\"deny\"", "\"allow\"", "\"jwt_cache_config\"", "\"jwt_cache_size\"", "\"http://\"",
        "\"https://\"", "\"5s\"", "\"1.5s\"", "\"0s\"", "\"18446744073709551s\"", "503", "401", "1024", "4194304",
        "256", "1048576", "100000", "\"x-jwt-verified\"", "\"x-jwt-reason\"", "\"authorization\"", "\"host\"",
    ];
    let mut v: Vec<&str> = json.to_vec();
    v.extend(claims);
    dict("token_verify_structured", &v);
    let mut v: Vec<&str> = json.to_vec();
    v.extend(jwk);
    dict("jwks_parse", &v);
    let mut v: Vec<&str> = json.to_vec();
    v.extend(config);
    v.extend(jwk);
    dict("config_parse", &v);
    dict(
        "cache_control",
        &["max-age=", "no-cache", "no-store", "MAX-AGE", "=\"", "\"", ",", " ", "s", ".", "0", "18446744073709551615", "EJ1 ", "C1 ", "\n"],
    );
    // Raw tokens are base64url text: base64url of common JSON openings.
    let frags = [
        r#"{"alg":"EdDSA","kid":"k1"}"#,
        r#"{"alg":"Ed25519","kid":"k2"}"#,
        r#"{"alg":"EdDSA"}"#,
        r#"{"iss":"https://issuer.example","aud":"api","exp":1760000600}"#,
    ];
    let enc: Vec<String> = frags.iter().map(|f| b64url_encode(f.as_bytes())).collect();
    let mut v: Vec<&str> = enc.iter().map(String::as_str).collect();
    v.extend([".", "eyJ", "In0", "fQ"]);
    dict("token_verify", &v);
}

fn main() {
    token_seeds();
    jwks_seeds();
    config_seeds();
    cache_seeds();
    dicts();
    for t in ["token_verify", "token_verify_structured", "jwks_parse", "config_parse", "cache_control"] {
        let n = fs::read_dir(root().join("fuzz/seeds").join(t)).map(|d| d.count()).unwrap_or(0);
        println!("fuzz/seeds/{t}: {n} files");
    }
}
