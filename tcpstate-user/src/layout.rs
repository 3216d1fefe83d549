//! Reads the record layout of `sock:inet_sock_set_state` from the tracepoint's
//! `format` file. aya has no CO-RE for Rust eBPF programs, and the layout moved
//! in Linux 5.6 (`protocol` u8 -> u16 shifts every later field), so the
//! offsets are handed to the program at load time instead of compiled in.

use std::fmt;

use tcpstate_common::{SynackLayout, TracepointLayout};

/// Why a format file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    Missing(&'static str),
    BadSize {
        field: &'static str,
        size: usize,
        expected: &'static str,
    },
    BadOffset {
        field: &'static str,
        offset: usize,
    },
    Malformed(String),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Missing(field) => write!(f, "field `{field}` is missing"),
            LayoutError::BadSize {
                field,
                size,
                expected,
            } => write!(f, "field `{field}` has size {size}, expected {expected}"),
            LayoutError::BadOffset { field, offset } => {
                write!(
                    f,
                    "field `{field}` has offset {offset}, expected one below 65536"
                )
            }
            LayoutError::Malformed(line) => write!(f, "cannot parse line `{line}`"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// One `field:` line: name (without array suffix), offset, size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field<'a> {
    name: &'a str,
    offset: usize,
    size: usize,
}

fn parse_field(line: &str) -> Result<Option<Field<'_>>, LayoutError> {
    let line = line.trim();
    let Some(rest) = line.strip_prefix("field:") else {
        return Ok(None);
    };
    let malformed = || LayoutError::Malformed(line.chars().take(120).collect());
    let mut parts = rest.split(';').map(str::trim);
    let decl = parts.next().ok_or_else(malformed)?;
    let name = decl
        .rsplit(|c: char| c.is_whitespace() || c == '*')
        .next()
        .ok_or_else(malformed)?;
    let name = name.split('[').next().unwrap_or(name);
    if name.is_empty() {
        return Err(malformed());
    }
    let mut offset = None;
    let mut size = None;
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = Some(v.parse::<usize>().map_err(|_| malformed())?);
        } else if let Some(v) = part.strip_prefix("size:") {
            size = Some(v.parse::<usize>().map_err(|_| malformed())?);
        }
    }
    match (offset, size) {
        (Some(offset), Some(size)) => Ok(Some(Field { name, offset, size })),
        _ => Err(malformed()),
    }
}

fn fields(format: &str) -> Result<Vec<Field<'_>>, LayoutError> {
    let mut fields = Vec::new();
    for line in format.lines() {
        if let Some(f) = parse_field(line)? {
            fields.push(f);
        }
    }
    Ok(fields)
}

/// Looks up a field by name, checking its size is one of `sizes`.
fn finder<'a>(
    fields: &'a [Field<'a>],
) -> impl Fn(&'static str, &[usize], &'static str) -> Result<(u16, usize), LayoutError> + 'a {
    move |name, sizes, expected| {
        let f = fields
            .iter()
            .find(|f| f.name == name)
            .ok_or(LayoutError::Missing(name))?;
        if !sizes.contains(&f.size) {
            return Err(LayoutError::BadSize {
                field: name,
                size: f.size,
                expected,
            });
        }
        // Offsets are handed to the program as u16; records are < 4 KiB.
        let offset = u16::try_from(f.offset).map_err(|_| LayoutError::BadOffset {
            field: name,
            offset: f.offset,
        })?;
        Ok((offset, f.size))
    }
}

/// Parses the text of `events/sock/inet_sock_set_state/format`.
pub fn parse(format: &str) -> Result<TracepointLayout, LayoutError> {
    let fields = fields(format)?;
    let find = finder(&fields);
    let (protocol, protocol_size) = find("protocol", &[1, 2], "1 or 2")?;
    Ok(TracepointLayout {
        skaddr: find("skaddr", &[8], "8")?.0,
        oldstate: find("oldstate", &[4], "4")?.0,
        newstate: find("newstate", &[4], "4")?.0,
        sport: find("sport", &[2], "2")?.0,
        dport: find("dport", &[2], "2")?.0,
        family: find("family", &[2], "2")?.0,
        protocol,
        protocol_size: protocol_size as u16,
        saddr: find("saddr", &[4], "4")?.0,
        daddr: find("daddr", &[4], "4")?.0,
        saddr_v6: find("saddr_v6", &[16], "16")?.0,
        daddr_v6: find("daddr_v6", &[16], "16")?.0,
    })
}

/// Parses the text of `events/tcp/tcp_retransmit_synack/format`.
pub fn parse_synack(format: &str) -> Result<SynackLayout, LayoutError> {
    let fields = fields(format)?;
    let find = finder(&fields);
    Ok(SynackLayout {
        skaddr: find("skaddr", &[8], "8")?.0,
        req: find("req", &[8], "8")?.0,
        sport: find("sport", &[2], "2")?.0,
        dport: find("dport", &[2], "2")?.0,
        family: find("family", &[2], "2")?.0,
        saddr: find("saddr", &[4], "4")?.0,
        daddr: find("daddr", &[4], "4")?.0,
        saddr_v6: find("saddr_v6", &[16], "16")?.0,
        daddr_v6: find("daddr_v6", &[16], "16")?.0,
        present: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: &str = include_str!("../tests/fixtures/format-6.18.txt");
    const PRE_5_6: &str = include_str!("../tests/fixtures/format-5.4.txt");

    #[test]
    fn current_kernel_layout_has_u16_protocol() {
        // The layout the kernel side reads with constant offsets.
        assert_eq!(parse(CURRENT).unwrap(), TracepointLayout::SINCE_5_6);
    }

    #[test]
    fn pre_5_6_layout_has_u8_protocol_and_shifted_addresses() {
        let l = parse(PRE_5_6).unwrap();
        assert_eq!(l.protocol, 30);
        assert_eq!(l.protocol_size, 1);
        assert_eq!(l.saddr, 31);
        assert_eq!(l.daddr, 35);
        assert_eq!(l.saddr_v6, 39);
        assert_eq!(l.daddr_v6, 55);
    }

    #[test]
    fn synack_layout() {
        let l = parse_synack(include_str!("../tests/fixtures/synack-6.18.txt")).unwrap();
        assert_eq!(
            l,
            SynackLayout {
                skaddr: 8,
                req: 16,
                sport: 24,
                dport: 26,
                family: 28,
                saddr: 30,
                daddr: 34,
                saddr_v6: 38,
                daddr_v6: 54,
                present: 1,
            }
        );
    }

    #[test]
    fn missing_field_is_named() {
        let text = CURRENT.replace("daddr_v6", "other");
        assert_eq!(parse(&text), Err(LayoutError::Missing("daddr_v6")));
    }

    #[test]
    fn unexpected_size_is_an_error() {
        let text = CURRENT.replace(
            "field:__u16 sport;\toffset:24;\tsize:2;",
            "field:__u32 sport;\toffset:24;\tsize:4;",
        );
        assert_eq!(
            parse(&text),
            Err(LayoutError::BadSize {
                field: "sport",
                size: 4,
                expected: "2"
            })
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(
            parse("field:int x;\toffset:zz;\tsize:4;"),
            Err(LayoutError::Malformed(_))
        ));
        assert_eq!(parse(""), Err(LayoutError::Missing("protocol")));
        assert!(parse("field:\u{0}\u{ff};;;;").is_err());
    }
}
