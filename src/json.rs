//! JSON objects with unique member names. serde_json keeps the last of
//! duplicate members; RFC 7515 §5.2 and RFC 7519 §7.2 let us refuse them
//! instead, which closes "parser differential" tricks (two `alg`s, two `kid`s).
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A top-level JSON object whose member names are unique. Nested values are
/// plain `serde_json::Value`s (serde_json bounds their depth at 128).
pub struct UniqueObject(pub Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<UniqueObject, A::Error> {
                let mut out = Map::new();
                while let Some(k) = m.next_key::<String>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format_args!("duplicate member {k:?}")));
                    }
                    let v: Value = m.next_value()?;
                    out.insert(k, v);
                }
                Ok(UniqueObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses bytes as one JSON object with unique member names.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    serde_json::from_slice::<UniqueObject>(bytes).map(|o| o.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_shapes() {
        assert!(parse_object(br#"{"a":1,"b":2}"#).is_ok());
        assert!(parse_object(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_object(br#"{"a":1,"\u0061":2}"#).is_err(), "escaped duplicate");
        assert!(parse_object(br#"[1]"#).is_err());
        assert!(parse_object(br#"{"a":1} x"#).is_err(), "trailing bytes");
        assert!(parse_object(b"{\"a\":\"\xff\"}").is_err(), "not UTF-8");
        let deep = "[".repeat(100_000);
        let doc = format!("{{\"a\":{deep}");
        assert!(parse_object(doc.as_bytes()).is_err(), "depth is bounded");
    }
}
