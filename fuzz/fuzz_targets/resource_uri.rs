//! A resource URI as a client writes it: parsing, percent-decoding and the
//! subscription watch key never panic.
#![no_main]

use handoff::mcp::resources::{parse, watch_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else { return };
    if let Some(p) = parse(uri) {
        assert!(!p.kind.contains('/'));
    }
    if let Some(k) = watch_key(uri) {
        assert!(k.starts_with("session\0") || k.starts_with("agent\0"));
    }
});
