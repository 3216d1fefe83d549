//! Process names come from the kernel as up to 16 raw bytes that any process
//! can set (prctl(PR_SET_NAME)): they may hold escape sequences, newlines or
//! invalid UTF-8. They are only ever shown through [`sanitize`].

use std::borrow::Cow;

/// The bytes of a NUL-padded `comm` up to the first NUL.
pub fn trim(raw: &[u8]) -> &[u8] {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    &raw[..end]
}

/// Printable text for a `comm`: control characters, backslashes and invalid
/// UTF-8 are written as `\xNN` escapes, so the result is safe for a terminal,
/// a CSV cell and (after JSON string escaping) a JSON value.
pub(crate) fn sanitize(raw: &[u8]) -> Cow<'_, str> {
    let bytes = trim(raw);
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.chars().any(needs_escape)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() * 2);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if needs_escape(c) {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    Cow::Owned(out)
}

/// Control characters (C0, DEL, C1), the backslash (so escapes stay
/// unambiguous) and the bidi/zero-width controls that can make a terminal line
/// read differently from its bytes.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(s: &[u8]) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s);
        c
    }

    #[test]
    fn plain_names_pass_through_borrowed() {
        assert!(matches!(sanitize(&comm(b"nginx")), Cow::Borrowed("nginx")));
        assert_eq!(sanitize(&comm(b"swapper/1")), "swapper/1");
    }

    #[test]
    fn escape_sequences_and_newlines_are_escaped() {
        assert_eq!(sanitize(&comm(b"\x1b[31mred\n")), "\\x1b[31mred\\x0a");
    }

    #[test]
    fn invalid_utf8_is_escaped() {
        assert_eq!(sanitize(&comm(b"a\xff\xfeb")), "a\\xff\\xfeb");
    }

    #[test]
    fn backslash_and_bidi_controls_are_escaped() {
        assert_eq!(sanitize(&comm(b"a\\b")), "a\\x5cb");
        assert_eq!(
            sanitize(&comm("x\u{202e}y".as_bytes())),
            "x\\xe2\\x80\\xaey"
        );
    }

    #[test]
    fn full_sixteen_bytes_without_nul() {
        assert_eq!(sanitize(b"0123456789abcdef"), "0123456789abcdef");
    }
}
