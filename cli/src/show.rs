//! How values, durations and URLs are shown.

/// A value for people: its text when it is valid UTF-8, else an escaped byte string in
/// Rust's notation (`b"\x80\x04K*."`: printable ASCII as is, `\n` `\r` `\t` `\\` `\"` `\'`,
/// every other byte as `\xNN`).
pub(crate) fn text(value: &[u8]) -> (String, bool) {
    match std::str::from_utf8(value) {
        Ok(s) => (s.to_owned(), true),
        Err(_) => (format!("b\"{}\"", value.escape_ascii()), false),
    }
}

/// `n` things: "1 key", "3 keys".
pub(crate) fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Standard base64 with padding (RFC 4648), for `--json` values.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A latency for people: microseconds with one decimal under a millisecond, else
/// milliseconds with three.
pub(crate) fn ms(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{:.1} µs", ms * 1000.0)
    } else {
        format!("{ms:.3} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        // RFC 4648 section 10's test vectors.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn latencies_pick_their_unit() {
        use std::time::Duration;
        assert_eq!(ms(Duration::from_nanos(160)), "0.2 µs");
        assert_eq!(ms(Duration::from_micros(42)), "42.0 µs");
        assert_eq!(ms(Duration::from_micros(1500)), "1.500 ms");
    }

    #[test]
    fn text_escapes_only_what_is_not_utf8() {
        assert_eq!(text("héllo\n".as_bytes()), ("héllo\n".to_owned(), true));
        assert_eq!(
            text(b"\x80\x04K*.\"\n"),
            (r#"b"\x80\x04K*.\"\n""#.to_owned(), false)
        );
    }
}
