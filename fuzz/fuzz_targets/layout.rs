//! Fuzzes the tracepoint format-file parsers (`layout::parse` for
//! sock:inet_sock_set_state, `layout::parse_synack` for
//! tcp:tcp_retransmit_synack): arbitrary text must give a layout or an error,
//! never a panic, and an error must render as one printable line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpstate::layout;

fn one_line(e: &dyn std::fmt::Display) {
    let msg = e.to_string();
    // Error messages quote the offending line; the reporter escapes control
    // characters, but the message itself must stay bounded.
    assert!(msg.len() < 1024, "error message of {} bytes", msg.len());
}

fuzz_target!(|data: &[u8]| {
    // The tool reads the file as UTF-8 (read_to_string): only valid text
    // reaches the parsers; the lossy form exercises the rest.
    let lossy = String::from_utf8_lossy(data);
    for text in [std::str::from_utf8(data).ok(), Some(lossy.as_ref())]
        .into_iter()
        .flatten()
    {
        match layout::parse(text) {
            Ok(l) => {
                assert!(l.protocol_size == 1 || l.protocol_size == 2, "{l:?}");
            }
            Err(e) => one_line(&e),
        }
        if let Err(e) = layout::parse_synack(text) {
            one_line(&e);
        }
    }
});
