//! Registered-claim checks (RFC 7519 §4.1) against a provider's policy,
//! done only after the signature has verified.
use serde_json::{Map, Value};
use std::fmt;

/// Largest accepted NumericDate: 9999-12-31T23:59:59Z. Anything later is
/// treated as garbage rather than "never expires".
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPolicy {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub clock_skew_seconds: i64,
    pub require_expiration: bool,
    pub max_lifetime_seconds: Option<i64>,
}

impl Default for ClaimPolicy {
    fn default() -> Self {
        ClaimPolicy {
            issuer: None,
            audiences: Vec::new(),
            clock_skew_seconds: 60,
            require_expiration: true,
            max_lifetime_seconds: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    MissingExp,
    Expired,
    NotYetValid,
    IssuedInFuture,
    /// A date claim that is not a non-negative, sane NumericDate.
    BadDate(&'static str),
    LifetimeTooLong,
    /// A registered claim of the wrong JSON type (RFC 7519 §4.1).
    BadType(&'static str),
    MissingIssuer,
    IssuerMismatch,
    MissingAudience,
    AudienceMismatch,
}

impl ClaimError {
    /// Short stable code, used in stats names and logs.
    pub fn code(self) -> &'static str {
        match self {
            ClaimError::MissingExp => "exp_missing",
            ClaimError::Expired => "expired",
            ClaimError::NotYetValid => "not_yet_valid",
            ClaimError::IssuedInFuture => "iat_future",
            ClaimError::BadDate(_) => "bad_date",
            ClaimError::LifetimeTooLong => "lifetime_too_long",
            ClaimError::BadType(_) => "bad_claim",
            ClaimError::MissingIssuer | ClaimError::IssuerMismatch => "issuer",
            ClaimError::MissingAudience | ClaimError::AudienceMismatch => "audience",
        }
    }
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::MissingExp => f.write_str("Jwt has no exp"),
            ClaimError::Expired => f.write_str("Jwt is expired"),
            ClaimError::NotYetValid => f.write_str("Jwt not yet valid"),
            ClaimError::IssuedInFuture => f.write_str("Jwt issued in the future"),
            ClaimError::BadDate(c) => write!(f, "Jwt {c} is not a valid NumericDate"),
            ClaimError::LifetimeTooLong => f.write_str("Jwt lifetime exceeds the maximum"),
            ClaimError::BadType(c) => write!(f, "Jwt {c} has the wrong type"),
            ClaimError::MissingIssuer => f.write_str("Jwt has no iss"),
            ClaimError::IssuerMismatch => f.write_str("Jwt issuer is not configured"),
            ClaimError::MissingAudience => f.write_str("Jwt has no aud"),
            ClaimError::AudienceMismatch => f.write_str("Audiences in Jwt are not allowed"),
        }
    }
}

/// Reads a NumericDate: integer or float seconds, never a string, never
/// negative, never past year 9999. Fractions are truncated toward zero.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, ClaimError> {
    let Some(v) = claims.get(name) else { return Ok(None) };
    let secs = match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i
            } else if let Some(f) = n.as_f64() {
                if !f.is_finite() || !(0.0..=MAX_NUMERIC_DATE as f64).contains(&f) {
                    return Err(ClaimError::BadDate(name));
                }
                f.trunc() as i64
            } else {
                return Err(ClaimError::BadDate(name));
            }
        }
        _ => return Err(ClaimError::BadDate(name)),
    };
    if !(0..=MAX_NUMERIC_DATE).contains(&secs) {
        return Err(ClaimError::BadDate(name));
    }
    Ok(Some(secs))
}

impl ClaimPolicy {
    /// Checks the time claims, issuer and audience. `now` is Unix seconds.
    /// Returns the token's `exp`, if any, so callers can bound caches by it.
    pub fn check(&self, claims: &Map<String, Value>, now: i64) -> Result<Option<i64>, ClaimError> {
        // StringOrURI claims must be strings; `aud` a string or strings.
        for name in ["iss", "sub", "jti"] {
            if claims.get(name).is_some_and(|v| !v.is_string()) {
                return Err(ClaimError::BadType(name));
            }
        }
        match claims.get("aud") {
            None | Some(Value::String(_)) => {}
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
            Some(_) => return Err(ClaimError::BadType("aud")),
        }
        let skew = self.clock_skew_seconds;
        let exp = numeric_date(claims, "exp")?;
        let nbf = numeric_date(claims, "nbf")?;
        let iat = numeric_date(claims, "iat")?;
        match exp {
            None if self.require_expiration => return Err(ClaimError::MissingExp),
            Some(e) if now > e.saturating_add(skew) => return Err(ClaimError::Expired),
            _ => {}
        }
        if let Some(n) = nbf {
            if n > now.saturating_add(skew) {
                return Err(ClaimError::NotYetValid);
            }
        }
        if let Some(i) = iat {
            if i > now.saturating_add(skew) {
                return Err(ClaimError::IssuedInFuture);
            }
        }
        if let Some(max) = self.max_lifetime_seconds {
            // As jwt_authn: lifetime from iat when present, else from now.
            let Some(e) = exp else { return Err(ClaimError::MissingExp) };
            if e.saturating_sub(iat.unwrap_or(now)) > max {
                return Err(ClaimError::LifetimeTooLong);
            }
        }
        if let Some(want) = &self.issuer {
            match claims.get("iss") {
                None => return Err(ClaimError::MissingIssuer),
                Some(Value::String(s)) if s == want => {}
                Some(_) => return Err(ClaimError::IssuerMismatch),
            }
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                None => return Err(ClaimError::MissingAudience),
                Some(Value::String(s)) => self.audiences.iter().any(|a| a == s),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|s| self.audiences.iter().any(|a| a == s)),
                Some(_) => false,
            };
            if !ok {
                return Err(ClaimError::AudienceMismatch);
            }
        }
        Ok(exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_760_000_000;

    fn policy() -> ClaimPolicy {
        ClaimPolicy {
            issuer: Some("https://issuer.example".into()),
            audiences: vec!["api".into(), "web".into()],
            ..ClaimPolicy::default()
        }
    }

    fn base() -> Value {
        json!({"iss":"https://issuer.example","aud":["api"],"sub":"u","iat":NOW-10,"exp":NOW+890})
    }

    fn with(edit: &[(&str, Value)]) -> Map<String, Value> {
        let mut v = base();
        for (k, val) in edit {
            if val.is_null() {
                v.as_object_mut().map(|o| o.remove(*k));
            } else {
                v[*k] = val.clone();
            }
        }
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn table() {
        use ClaimError::*;
        let p = policy();
        let cases: Vec<(&str, Vec<(&str, Value)>, Result<(), ClaimError>)> = vec![
            ("valid", vec![], Ok(())),
            ("aud as string", vec![("aud", json!("web"))], Ok(())),
            ("aud many", vec![("aud", json!(["x", "web"]))], Ok(())),
            ("aud empty array", vec![("aud", json!([]))], Err(AudienceMismatch)),
            ("aud wrong", vec![("aud", json!(["apix"]))], Err(AudienceMismatch)),
            ("aud number", vec![("aud", json!(1))], Err(BadType("aud"))),
            ("aud mixed array", vec![("aud", json!(["api", 1]))], Err(BadType("aud"))),
            ("sub number", vec![("sub", json!(7))], Err(BadType("sub"))),
            ("jti object", vec![("jti", json!({}))], Err(BadType("jti"))),
            ("aud missing", vec![("aud", Value::Null)], Err(MissingAudience)),
            ("iss prefix", vec![("iss", json!("https://issuer.ex"))], Err(IssuerMismatch)),
            ("iss superstring", vec![("iss", json!("https://issuer.example.evil"))], Err(IssuerMismatch)),
            ("iss missing", vec![("iss", Value::Null)], Err(MissingIssuer)),
            ("iss array", vec![("iss", json!(["https://issuer.example"]))], Err(BadType("iss"))),
            ("exp missing", vec![("exp", Value::Null)], Err(MissingExp)),
            ("expired beyond skew", vec![("exp", json!(NOW - 61))], Err(Expired)),
            ("expired within skew", vec![("exp", json!(NOW - 60))], Ok(())),
            ("exp float", vec![("exp", json!((NOW + 5) as f64 + 0.5))], Ok(())),
            ("exp string", vec![("exp", json!("9999999999"))], Err(BadDate("exp"))),
            ("exp negative", vec![("exp", json!(-1))], Err(BadDate("exp"))),
            ("exp negative float", vec![("exp", json!(-1.5))], Err(BadDate("exp"))),
            ("exp absurd", vec![("exp", json!(1e300))], Err(BadDate("exp"))),
            ("exp huge int", vec![("exp", json!(u64::MAX))], Err(BadDate("exp"))),
            ("exp bool", vec![("exp", json!(true))], Err(BadDate("exp"))),
            ("nbf future beyond skew", vec![("nbf", json!(NOW + 61))], Err(NotYetValid)),
            ("nbf future within skew", vec![("nbf", json!(NOW + 60))], Ok(())),
            ("nbf string", vec![("nbf", json!("1"))], Err(BadDate("nbf"))),
            ("iat future", vec![("iat", json!(NOW + 3600))], Err(IssuedInFuture)),
            ("iat negative", vec![("iat", json!(-5))], Err(BadDate("iat"))),
        ];
        for (name, edit, want) in cases {
            let got = p.check(&with(&edit), NOW).map(|_| ());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn optional_exp_and_lifetime() {
        let mut p = policy();
        p.require_expiration = false;
        assert!(p.check(&with(&[("exp", Value::Null)]), NOW).is_ok());
        p.max_lifetime_seconds = Some(900);
        assert_eq!(p.check(&with(&[]), NOW), Ok(Some(NOW + 890)));
        let far = with(&[("exp", json!(NOW + 86_400 * 365))]);
        assert_eq!(p.check(&far, NOW), Err(ClaimError::LifetimeTooLong));
        let no_iat = with(&[("iat", Value::Null), ("exp", json!(NOW + 901))]);
        assert_eq!(p.check(&no_iat, NOW), Err(ClaimError::LifetimeTooLong));
        // A lifetime bound makes exp necessary even when exp is optional.
        assert_eq!(p.check(&with(&[("exp", Value::Null)]), NOW), Err(ClaimError::MissingExp));
    }

    #[test]
    fn open_policy_skips_iss_and_aud() {
        let p = ClaimPolicy::default();
        assert!(p.check(&with(&[("iss", Value::Null), ("aud", Value::Null)]), NOW).is_ok());
    }
}
