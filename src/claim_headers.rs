//! Claim values as header values that are always safe to send: strings
//! keep their visible-ASCII characters and percent-encode the rest (so no
//! CR/LF or control byte can reach a header), numbers and booleans are
//! written as JSON, and objects and arrays as base64url JSON.
use crate::b64;
use serde_json::{Map, Value};

/// Follows a dotted path such as `user_context.role` into the claims.
pub fn lookup<'c>(claims: &'c Map<String, Value>, path: &[String]) -> Option<&'c Value> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for seg in rest {
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
}

pub fn header_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(percent_encode(s)),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        Value::Array(_) | Value::Object(_) => Some(b64::encode(v.to_string().as_bytes())),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_header_safe() {
        let c = json!({"sub":"alice","n":3,"ok":true,"user_context":{"role":"admin","features":["a","b"]},
                       "evil":"x\r\nSet-Cookie: y","uni":"é%"});
        let c = c.as_object().cloned().unwrap_or_default();
        let get = |p: &str| lookup(&c, &p.split('.').map(str::to_string).collect::<Vec<_>>()).and_then(header_value);
        assert_eq!(get("sub").as_deref(), Some("alice"));
        assert_eq!(get("n").as_deref(), Some("3"));
        assert_eq!(get("ok").as_deref(), Some("true"));
        assert_eq!(get("user_context.role").as_deref(), Some("admin"));
        assert_eq!(get("user_context.features").as_deref(), Some(b64::encode(br#"["a","b"]"#).as_str()));
        assert_eq!(get("evil").as_deref(), Some("x%0D%0ASet-Cookie: y"));
        assert_eq!(get("uni").as_deref(), Some("%C3%A9%25"));
        assert_eq!(get("user_context.missing"), None);
        assert_eq!(get("sub.deeper"), None);
    }
}
