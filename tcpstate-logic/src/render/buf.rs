//! Allocation-free writers for the per-event hot paths: integers, fixed-point
//! milliseconds, hexadecimal, addresses, padding, JSON and CSV strings. Each
//! appends to the output buffer; none allocates (beyond the buffer's growth)
//! or goes through `core::fmt` for the common cases.

use std::{io::Write as _, net::IpAddr};

use crate::event::TcpState;

const DEC_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes the last `dst.len()` decimal digits of `v` into `dst`, two at a time.
#[inline]
fn fill_digits(dst: &mut [std::mem::MaybeUninit<u8>], mut v: u64) {
    let mut i = dst.len();
    while i >= 2 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        dst[i - 1].write(DEC_PAIRS[d + 1]);
        dst[i - 2].write(DEC_PAIRS[d]);
        i -= 2;
    }
    if i == 1 {
        dst[0].write(b'0' + (v % 10) as u8);
    }
}

/// Appends `v` as exactly `n` decimal digits, zero-padded (`v < 10^n`).
#[inline]
pub fn digits(out: &mut Vec<u8>, v: u64, n: usize) {
    out.reserve(n);
    let len = out.len();
    fill_digits(&mut out.spare_capacity_mut()[..n], v);
    // SAFETY: the `n` bytes after `len` were just initialised.
    unsafe { out.set_len(len + n) };
}

/// Appends `v` in decimal (no `fmt`, no intermediate buffer).
#[inline]
pub fn u64(out: &mut Vec<u8>, v: u64) {
    let n = v.checked_ilog10().unwrap_or(0) as usize + 1;
    digits(out, v, n);
}

/// A NUL-padded `comm`, shown safely: printable ASCII names (nearly all) are
/// borrowed as they are, anything else goes through
/// [`crate::comm::sanitize`]. Same result as `sanitize`, faster.
#[inline]
pub fn comm(raw: &[u8]) -> std::borrow::Cow<'_, str> {
    let bytes = crate::comm::trim(raw);
    if bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\')
    {
        // All printable ASCII: valid UTF-8 with nothing to escape.
        if let Ok(s) = std::str::from_utf8(bytes) {
            return std::borrow::Cow::Borrowed(s);
        }
    }
    crate::comm::sanitize(raw)
}

/// Appends spaces until what was written since `start` is `width` bytes wide.
#[inline]
pub(crate) fn pad_from(out: &mut Vec<u8>, start: usize, width: usize) {
    let n = out.len() - start;
    if n < width {
        out.resize(out.len() + (width - n), b' ');
    }
}

/// Appends what `write` writes, padded with spaces to `width` bytes.
#[inline]
pub(crate) fn padded(out: &mut Vec<u8>, width: usize, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    write(out);
    pad_from(out, start, width);
}

/// Appends the PID (7 wide) and COMM (16 wide) columns of a task, or
/// dashes when it is unknown (never a made-up 0).
pub fn task(out: &mut Vec<u8>, task: Option<&crate::event::Task>) {
    match task {
        Some(t) => {
            padded(out, 7, |out| u64(out, t.pid as u64));
            out.push(b' ');
            str_fitted(out, &comm(&t.comm), COMM_WIDTH);
        }
        None => out.extend_from_slice(b"-       -               "),
    }
}

/// The COMM column: a name is at most 16 bytes, but escaped (`\xNN` per
/// control byte) it can be four times as long.
pub(crate) const COMM_WIDTH: usize = 16;

/// Appends `s` in exactly `width` characters: padded, or cut to `width - 1`
/// and marked with `+` (as top does), so a long value never shifts the
/// columns after it. Machine-readable outputs keep the whole value.
pub(crate) fn str_fitted(out: &mut Vec<u8>, s: &str, width: usize) {
    match s.char_indices().nth(width) {
        None => str_padded(out, s, width),
        Some(_) => {
            let cut = s.char_indices().nth(width - 1).map_or(s.len(), |(i, _)| i);
            out.extend_from_slice(&s.as_bytes()[..cut]);
            out.push(b'+');
        }
    }
}

/// Appends `s` left-aligned in `width` characters (like `{:<width}`).
#[inline]
pub(crate) fn str_padded(out: &mut Vec<u8>, s: &str, width: usize) {
    out.extend_from_slice(s.as_bytes());
    let chars = if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    };
    if chars < width {
        out.resize(out.len() + (width - chars), b' ');
    }
}

/// Appends `0x` and `v` in lowercase hexadecimal without leading zeros
/// (like `{:#x}`).
#[inline]
pub fn hex(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"0x");
    let nibbles = if v == 0 {
        1
    } else {
        (64 - v.leading_zeros()).div_ceil(4)
    };
    for i in (0..nibbles).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// Appends an address as `Display` would (IPv4 dotted quad without `fmt`).
#[inline]
pub(crate) fn ip(out: &mut Vec<u8>, addr: &IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            u64(out, o[0] as u64);
            out.push(b'.');
            u64(out, o[1] as u64);
            out.push(b'.');
            u64(out, o[2] as u64);
            out.push(b'.');
            u64(out, o[3] as u64);
        }
        // Rare enough (and subtle enough: zero-run compression, v4-mapped
        // forms) to leave to std; `fmt` writes into the Vec without allocating.
        IpAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

/// Appends nanoseconds as milliseconds rounded to 3 decimals (`812.345`),
/// the text column's precision (microseconds).
#[inline]
pub(crate) fn ms3(out: &mut Vec<u8>, ns: u64) {
    let us = ns / 1000 + u64::from(ns % 1000 >= 500);
    u64(out, us / 1000);
    out.push(b'.');
    digits(out, us % 1000, 3);
}

/// Appends nanoseconds as milliseconds, exactly, as a JSON number with at
/// least one decimal: `1.234567`, `0.04`, `812.0`. Parsing it gives the same
/// double as `ns as f64 / 1e6`.
#[inline]
pub(crate) fn ms_exact(out: &mut Vec<u8>, ns: u64) {
    u64(out, ns / 1_000_000);
    out.push(b'.');
    let mut frac = ns % 1_000_000;
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let mut n = 6;
    while frac.is_multiple_of(10) {
        frac /= 10;
        n -= 1;
    }
    digits(out, frac, n);
}

/// Appends a duration for people: `0.041ms`, `812.345ms`, `12.345s`,
/// `1h02m`: microsecond precision below 10 s, shorter beyond.
pub(crate) fn human_ns(out: &mut Vec<u8>, ns: u64) {
    if ns < 10_000_000_000 {
        ms3(out, ns);
        out.extend_from_slice(b"ms");
    } else if ns < 3_600_000_000_000 {
        let ms = (ns + 500_000) / 1_000_000;
        u64(out, ms / 1000);
        out.push(b'.');
        digits(out, ms % 1000, 3);
        out.push(b's');
    } else {
        let min = ns / 60_000_000_000;
        u64(out, min / 60);
        out.push(b'h');
        digits(out, min % 60, 2);
        out.push(b'm');
    }
}

/// Appends a state's name (`UNKNOWN(n)` for values this build does not know).
#[inline]
pub fn state(out: &mut Vec<u8>, st: TcpState) {
    match st {
        TcpState::Unknown(v) => {
            out.extend_from_slice(b"UNKNOWN(");
            u64(out, v as u64);
            out.push(b')');
        }
        other => out.extend_from_slice(other.name().as_bytes()),
    }
}

/// Appends `s` as a JSON string, quotes included.
#[inline]
pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    if b.iter()
        .all(|&c| c >= 0x20 && c != b'"' && c != b'\\' && c != 0x7f)
    {
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[from..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        from = i + 1;
    }
    out.extend_from_slice(&b[from..]);
    out.push(b'"');
}

/// Appends `s` as one CSV field (RFC 4180): quoted when it holds a comma, a
/// quote, a line break or leading/trailing spaces; quotes doubled.
#[inline]
pub(crate) fn csv_field(out: &mut Vec<u8>, s: &str) {
    let needs_quotes = s.bytes().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r'))
        || s.starts_with(' ')
        || s.ends_with(' ');
    if !needs_quotes {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    for c in s.bytes() {
        if c == b'"' {
            out.push(b'"');
        }
        out.push(c);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_match_std() {
        for v in [0, 1, 9, 10, 99, 100, 12345, 4026531840, u64::MAX] {
            assert_eq!(w(|o| u64(o, v)), v.to_string());
        }
        assert_eq!(w(|o| digits(o, 42, 6)), "000042");
        assert_eq!(w(|o| digits(o, 7, 1)), "7");
        assert_eq!(w(|o| digits(o, 0, 3)), "000");
    }

    #[test]
    fn comm_agrees_with_sanitize() {
        for raw in [
            &b"nginx\0\0\0\0\0\0\0\0\0\0\0"[..],
            b"0123456789abcdef",
            b"a\\b\0",
            b"\x1b[31m\0",
            "caf\u{e9}\0".as_bytes(),
            b"a\xffb",
            b"\0",
        ] {
            assert_eq!(comm(raw), crate::comm::sanitize(raw), "{raw:?}");
        }
    }

    #[test]
    fn hex_matches_std() {
        for v in [0, 1, 0xf, 0x10, 0xffff_8880_1234_5678, u64::MAX] {
            assert_eq!(w(|o| hex(o, v)), format!("{v:#x}"));
        }
    }

    #[test]
    fn ip_matches_std() {
        for a in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.3.4",
            "::1",
            "::ffff:127.0.0.1",
            "fe80::1:2",
            "2001:db8::",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(w(|o| self::ip(o, &ip)), ip.to_string());
        }
    }

    #[test]
    fn ms3_rounds_to_microseconds_like_format() {
        for ns in [0, 1, 499, 500, 1_234_567, 999_999_499, 999_999_500, 41_000] {
            assert_eq!(
                w(|o| ms3(o, ns)),
                format!("{:.3}", (ns as f64 / 1e3).round() / 1e3),
                "{ns}"
            );
        }
    }

    #[test]
    fn ms_exact_parses_to_the_same_double() {
        for ns in [
            0,
            1,
            10,
            1_234_567,
            1_000_000,
            40_000,
            812_000_000,
            u64::MAX,
        ] {
            let s = w(|o| ms_exact(o, ns));
            assert!(s.contains('.'), "{s}");
            let back: f64 = s.parse().unwrap();
            assert_eq!(back, ns as f64 / 1e6, "{ns} -> {s}");
            // serde_json prints the same text for these values.
            if (1000..1 << 40).contains(&ns) {
                assert_eq!(s, serde_json::to_string(&(ns as f64 / 1e6)).unwrap());
            }
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(w(|o| human_ns(o, 41_000)), "0.041ms");
        assert_eq!(w(|o| human_ns(o, 812_345_678)), "812.346ms");
        assert_eq!(w(|o| human_ns(o, 12_345_678_901)), "12.346s");
        assert_eq!(w(|o| human_ns(o, 3_725_000_000_000)), "1h02m");
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        let s = "a\"b\\c\nd\x1b\x7fé";
        let j = w(|o| json_str(o, s));
        assert_eq!(j, "\"a\\\"b\\\\c\\nd\\u001b\\u007fé\"");
        assert_eq!(serde_json::from_str::<String>(&j).unwrap(), s);
    }

    #[test]
    fn csv_fields_quote_only_when_needed() {
        assert_eq!(w(|o| csv_field(o, "nginx")), "nginx");
        assert_eq!(w(|o| csv_field(o, "a,b")), "\"a,b\"");
        assert_eq!(w(|o| csv_field(o, "say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(w(|o| csv_field(o, " x")), "\" x\"");
    }

    #[test]
    fn padding_counts_characters() {
        assert_eq!(w(|o| str_padded(o, "é", 3)), "é  ");
        assert_eq!(w(|o| str_padded(o, "toolong", 3)), "toolong");
        let mut out = b"ab".to_vec();
        pad_from(&mut out, 1, 4);
        assert_eq!(out, b"ab   ");
    }

    #[test]
    fn states_and_unknowns() {
        assert_eq!(w(|o| state(o, TcpState::CloseWait)), "CLOSE_WAIT");
        assert_eq!(w(|o| state(o, TcpState::Unknown(99))), "UNKNOWN(99)");
    }
}
