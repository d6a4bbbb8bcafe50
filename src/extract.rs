//! Finding the token in a request: headers (with a scheme prefix), query
//! parameters and cookies. A location that is present but unusable makes
//! the token invalid; it never counts as "no token" (which could let a
//! request through an allow-missing rule).
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Header name (lower-case) and value prefix such as "Bearer ".
    Header { name: String, prefix: String },
    Param(String),
    Cookie(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractError {
    Empty,
    WrongScheme,
    /// The same location given several times (e.g. two Authorization lines).
    Repeated,
    /// Two locations carry different tokens.
    Conflicting,
}

impl ExtractError {
    pub fn code(self) -> &'static str {
        match self {
            ExtractError::Empty => "empty_token",
            ExtractError::WrongScheme => "wrong_scheme",
            ExtractError::Repeated => "repeated_token",
            ExtractError::Conflicting => "conflicting_tokens",
        }
    }
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtractError::Empty => "Jwt is empty",
            ExtractError::WrongScheme => "Authorization scheme is not supported",
            ExtractError::Repeated => "Jwt is given more than once",
            ExtractError::Conflicting => "Jwt locations disagree",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extracted<'r> {
    Missing,
    /// The token, and the header names it was found in (for `forward: false`).
    Found { token: &'r [u8], headers: Vec<String> },
    Invalid(ExtractError),
}

/// The parts of a request extraction reads. Header names are lower-case.
pub struct RequestParts<'r> {
    pub headers: &'r [(String, Vec<u8>)],
    pub path: &'r [u8],
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// Strips a scheme prefix case-insensitively ("bearer x" works for
/// "Bearer "), allowing extra spaces after it as RFC 7235 does.
fn strip_prefix<'v>(value: &'v [u8], prefix: &str) -> Option<&'v [u8]> {
    // "Bearer" alone (prefix "Bearer ") is a present-but-empty token.
    let scheme = prefix.trim_end().as_bytes();
    if !scheme.is_empty() && trim(value).eq_ignore_ascii_case(scheme) {
        return Some(&[]);
    }
    let p = prefix.as_bytes();
    let head = value.get(..p.len())?;
    if !head.eq_ignore_ascii_case(p) {
        return None;
    }
    Some(trim(value.get(p.len()..).unwrap_or_default()))
}

fn query_values<'r>(path: &'r [u8], name: &str) -> Vec<&'r [u8]> {
    let Some(q) = path.iter().position(|&b| b == b'?') else { return Vec::new() };
    let query = path.get(q + 1..).unwrap_or_default();
    let query = query.split(|&b| b == b'#').next().unwrap_or_default();
    query
        .split(|&b| b == b'&')
        .filter_map(|kv| {
            let mut it = kv.splitn(2, |&b| b == b'=');
            let k = it.next()?;
            (k == name.as_bytes()).then(|| it.next().unwrap_or_default())
        })
        .collect()
}

fn cookie_values<'r>(headers: &'r [(String, Vec<u8>)], name: &str) -> Vec<&'r [u8]> {
    headers
        .iter()
        .filter(|(k, _)| k == "cookie")
        .flat_map(|(_, v)| v.split(|&b| b == b';'))
        .filter_map(|pair| {
            let pair = trim(pair);
            let mut it = pair.splitn(2, |&b| b == b'=');
            let k = it.next()?;
            (k == name.as_bytes()).then(|| trim(it.next().unwrap_or_default()))
        })
        .collect()
}

/// Looks in every location; all tokens found must be the same token.
pub fn extract<'r>(locations: &[Location], req: &RequestParts<'r>) -> Extracted<'r> {
    let mut found: Option<&'r [u8]> = None;
    let mut headers = Vec::new();
    for loc in locations {
        let values: Vec<&'r [u8]> = match loc {
            Location::Header { name, .. } => req
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
                .collect(),
            Location::Param(name) => query_values(req.path, name),
            Location::Cookie(name) => cookie_values(req.headers, name),
        };
        let value = match values.as_slice() {
            [] => continue,
            [one] => *one,
            _ => return Extracted::Invalid(ExtractError::Repeated),
        };
        let token = match loc {
            Location::Header { prefix, .. } if !prefix.is_empty() => match strip_prefix(value, prefix) {
                Some(t) => t,
                None => return Extracted::Invalid(ExtractError::WrongScheme),
            },
            _ => trim(value),
        };
        if token.is_empty() {
            return Extracted::Invalid(ExtractError::Empty);
        }
        // Envoy folds repeated header lines into one value joined by ','; a
        // JWT never holds a comma, so a comma means several tokens were sent.
        if matches!(loc, Location::Header { .. }) && token.contains(&b',') {
            return Extracted::Invalid(ExtractError::Repeated);
        }
        match found {
            Some(prev) if prev != token => return Extracted::Invalid(ExtractError::Conflicting),
            _ => found = Some(token),
        }
        if let Location::Header { name, .. } = loc {
            if !headers.contains(name) {
                headers.push(name.clone());
            }
        }
    }
    match found {
        Some(token) => Extracted::Found { token, headers },
        None => Extracted::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer() -> Location {
        Location::Header { name: "authorization".into(), prefix: "Bearer ".into() }
    }

    fn run(locs: &[Location], headers: &[(&str, &[u8])], path: &str) -> Result<Vec<u8>, Option<ExtractError>> {
        let hs: Vec<(String, Vec<u8>)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
        match extract(locs, &RequestParts { headers: &hs, path: path.as_bytes() }) {
            Extracted::Found { token, .. } => Ok(token.to_vec()),
            Extracted::Missing => Err(None),
            Extracted::Invalid(e) => Err(Some(e)),
        }
    }

    #[test]
    fn bearer_table() {
        use ExtractError::*;
        let l = [bearer()];
        let cases: Vec<(&[u8], Result<&[u8], Option<ExtractError>>)> = vec![
            (b"Bearer abc", Ok(b"abc")),
            (b"bearer abc", Ok(b"abc")),
            (b"BEARER   abc  ", Ok(b"abc")),
            (b"Bearer", Err(Some(Empty))),
            (b"Bearer ", Err(Some(Empty))),
            (b"", Err(Some(WrongScheme))),
            (b"Basic dXNlcjpwdw==", Err(Some(WrongScheme))),
            (b"Bearerabc", Err(Some(WrongScheme))),
            (b"abc", Err(Some(WrongScheme))),
        ];
        for (value, want) in cases {
            let got = run(&l, &[("authorization", value)], "/");
            assert_eq!(got, want.map(<[u8]>::to_vec), "{:?}", String::from_utf8_lossy(value));
        }
        assert_eq!(run(&l, &[], "/"), Err(None));
        assert_eq!(
            run(&l, &[("authorization", b"Bearer a"), ("authorization", b"Bearer a")], "/"),
            Err(Some(Repeated))
        );
        assert_eq!(run(&l, &[("authorization", b"Bearer a,Bearer b")], "/"), Err(Some(Repeated)));
    }

    #[test]
    fn params_cookies_and_agreement() {
        let l = [bearer(), Location::Param("access_token".into()), Location::Cookie("jwt".into())];
        assert_eq!(run(&l, &[], "/x?a=1&access_token=tok#f"), Ok(b"tok".to_vec()));
        assert_eq!(run(&l, &[("cookie", b"a=b; jwt=tok")], "/"), Ok(b"tok".to_vec()));
        assert_eq!(run(&l, &[("authorization", b"Bearer tok")], "/?access_token=tok"), Ok(b"tok".to_vec()));
        assert_eq!(
            run(&l, &[("authorization", b"Bearer tok")], "/?access_token=other"),
            Err(Some(ExtractError::Conflicting))
        );
        assert_eq!(run(&l, &[], "/?access_token=a&access_token=b"), Err(Some(ExtractError::Repeated)));
        assert_eq!(run(&l, &[], "/?access_token="), Err(Some(ExtractError::Empty)));
        assert_eq!(run(&l, &[("cookie", b"jwt=a"), ("cookie", b"jwt=b")], "/"), Err(Some(ExtractError::Repeated)));
    }

    #[test]
    fn custom_header_without_prefix() {
        let l = [Location::Header { name: "x-token".into(), prefix: String::new() }];
        assert_eq!(run(&l, &[("x-token", b" tok ")], "/"), Ok(b"tok".to_vec()));
        assert_eq!(run(&l, &[("x-token", b"")], "/"), Err(Some(ExtractError::Empty)));
        assert_eq!(run(&l, &[("x-token", b"\xff\xfe")], "/"), Ok(b"\xff\xfe".to_vec()));
    }
}
