//! Strict base64url (RFC 7515 §2): no padding, URL-safe alphabet only, and
//! canonical trailing bits, so one token has exactly one encoding.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Decodes strict base64url, refusing padding, `+`/`/`, whitespace and
/// non-canonical trailing bits.
pub fn decode(input: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(input).ok()
}

/// Decodes into a fixed-size array; any other decoded length is refused.
pub fn decode_array<const N: usize>(input: &[u8]) -> Option<[u8; N]> {
    // Exact encoded length first: refuses oversized input before decoding it.
    if input.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let mut out = [0u8; N];
    match URL_SAFE_NO_PAD.decode_slice(input, &mut out) {
        Ok(n) if n == N => Some(out),
        _ => None,
    }
}

pub fn encode(input: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictness() {
        assert_eq!(decode(b"YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(decode(b"YWI").as_deref(), Some(&b"ab"[..]));
        assert!(decode(b"YWI=").is_none(), "padding");
        assert!(decode(b"YW+/").is_none(), "standard alphabet");
        assert!(decode(b"YW I").is_none(), "whitespace");
        assert!(decode(b"YWJ").is_none(), "non-canonical trailing bits");
        assert!(decode(b"Y").is_none(), "impossible length");
        assert_eq!(decode(b"").as_deref(), Some(&b""[..]));
    }

    #[test]
    fn fixed_arrays() {
        let enc = encode(&[7u8; 32]);
        assert_eq!(decode_array::<32>(enc.as_bytes()), Some([7u8; 32]));
        assert!(decode_array::<32>(encode(&[7u8; 31]).as_bytes()).is_none());
        assert!(decode_array::<32>(encode(&[7u8; 33]).as_bytes()).is_none());
        assert!(decode_array::<64>(encode(&[1u8; 63]).as_bytes()).is_none());
        assert!(decode_array::<64>(encode(&[1u8; 65]).as_bytes()).is_none());
    }
}
