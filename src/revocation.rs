//! The revocation list: revoked `jti` and `sub` values, fetched and shared
//! like a JWKS. Format: `{"jti": ["…"], "sub": ["…"]}` (either may be absent,
//! not both).
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    pub jti: HashSet<String>,
    pub sub: HashSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationError {
    TooLarge,
    NotJson(String),
    NotAList,
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevocationError::TooLarge => f.write_str("body is over the size cap"),
            RevocationError::NotJson(e) => write!(f, "body is not a JSON object: {e}"),
            RevocationError::NotAList => f.write_str("JSON has neither a \"jti\" nor a \"sub\" array of strings"),
        }
    }
}

fn strings(doc: &Map<String, Value>, name: &str) -> Result<Option<HashSet<String>>, RevocationError> {
    match doc.get(name) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(RevocationError::NotAList))
            .collect::<Result<HashSet<_>, _>>()
            .map(Some),
        Some(_) => Err(RevocationError::NotAList),
    }
}

impl RevocationList {
    pub fn parse(body: &[u8], max_bytes: usize) -> Result<RevocationList, RevocationError> {
        if body.len() > max_bytes {
            return Err(RevocationError::TooLarge);
        }
        let doc: Map<String, Value> =
            serde_json::from_slice(body).map_err(|e| RevocationError::NotJson(e.to_string()))?;
        let jti = strings(&doc, "jti")?;
        let sub = strings(&doc, "sub")?;
        if jti.is_none() && sub.is_none() {
            return Err(RevocationError::NotAList);
        }
        Ok(RevocationList { jti: jti.unwrap_or_default(), sub: sub.unwrap_or_default() })
    }

    /// Whether the token's `jti` or `sub` is listed.
    pub fn revokes(&self, claims: &Map<String, Value>) -> bool {
        let listed = |name: &str, set: &HashSet<String>| {
            claims.get(name).and_then(Value::as_str).is_some_and(|v| set.contains(v))
        };
        listed("jti", &self.jti) || listed("sub", &self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_match() {
        let l = RevocationList::parse(br#"{"jti":["j1"],"sub":["mallory"]}"#, 1024).expect("list");
        let c = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(l.revokes(&c(json!({"jti":"j1","sub":"a"}))));
        assert!(l.revokes(&c(json!({"jti":"j2","sub":"mallory"}))));
        assert!(!l.revokes(&c(json!({"jti":"j2","sub":"alice"}))));
        assert!(!l.revokes(&c(json!({"jti":1}))));
        assert!(RevocationList::parse(br#"{"jti":[]}"#, 1024).is_ok());
        for bad in [&b"<html>"[..], b"{}", b"[]", br#"{"jti":"j1"}"#, br#"{"jti":[1]}"#] {
            assert!(RevocationList::parse(bad, 1024).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(RevocationList::parse(&[b' '; 2000], 1024), Err(RevocationError::TooLarge));
    }
}
