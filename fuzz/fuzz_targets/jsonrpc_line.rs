//! One line from a client, as the stdio transport reads it: the guard that
//! answers malformed input must never panic, and whatever it passes must be
//! a JSON object; every reply it makes is one JSON-RPC 2.0 line.
#![no_main]

use handoff::transport::jsonrpc_guard::{check, oversized_reply, shape, Verdict};
use libfuzzer_sys::fuzz_target;

fn assert_reply(line: &[u8]) {
    assert!(line.ends_with(b"\n"));
    let v: serde_json::Value = serde_json::from_slice(line).expect("a reply is JSON");
    assert_eq!(v["jsonrpc"], "2.0");
    assert!(v.get("id").is_some());
}

fuzz_target!(|data: &[u8]| {
    let verdict = match check(data) {
        Verdict::Pass => shape(data),
        other => other,
    };
    if let Verdict::Reply(line) = verdict {
        assert_reply(&line);
    }
    // Any split of the line into a kept head and tail.
    let cut = data.len() / 2;
    let (head, tail) = data.split_at(cut);
    assert_reply(&oversized_reply(head, tail, data.len(), 4 << 20));
});
