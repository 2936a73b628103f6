//! The answers JSON-RPC prescribes for input that is not a JSON-RPC message,
//! given before rmcp sees the line.
//!
//! rmcp ignores a line that is not JSON at all (the other SDKs do too, so
//! that two peers cannot echo errors at each other forever) and answers
//! well-formed JSON of the wrong shape with `id: null`. The contract asks
//! more of a server: every line that is not a valid message gets its error
//! (`-32700` parse error; `-32600` invalid request, with the request's id
//! when one can be read), so a client never waits for a reply that will not
//! come; and a JSON object with the same key twice is refused, since serde
//! would silently keep the last value and the server would act on
//! something the client's own parser may read differently.
//!
//! Everything here works on one line's bytes and never panics on them: the
//! fuzz target `fuzz_targets/jsonrpc_line.rs` drives `check` and
//! `oversized_reply` with arbitrary input.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use handoff_actors::HandoffError;
use rmcp::model::{JsonRpcMessage, JsonRpcResponse, JsonRpcVersion2_0, RequestId, ServerResult};
use rmcp::service::{RoleServer, RxJsonRpcMessage, TxJsonRpcMessage};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::mcp::reply;

/// What to do with one line.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// A JSON-RPC message (or one rmcp answers itself): hand it on.
    Pass,
    /// Write this line back instead; the input goes no further.
    Reply(Vec<u8>),
    /// A notification that cannot be answered: nothing to do.
    Drop,
}

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;

/// Check one line (without its newline). Syntax is checked in full,
/// nesting deeper than serde_json's 128 levels included, with every
/// object's keys checked for duplicates.
pub fn check(line: &[u8]) -> Verdict {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        // Not a message; rmcp skips blank lines, and so do we.
        return Verdict::Drop;
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    let walked = Walk.deserialize(&mut de).and_then(|()| de.end());
    let err = match walked {
        Ok(()) => return Verdict::Pass,
        Err(e) => e,
    };
    if err.classify() != serde_json::error::Category::Data {
        return Verdict::Reply(error_line(
            None,
            PARSE_ERROR,
            &format!("Parse error: {}", err),
            None,
        ));
    }
    // A duplicate key (the only data error a walk over any JSON makes).
    // Read the id and method as serde would (the last value wins), to
    // answer the request that was meant.
    let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
    let Some(id) = request_id(&v) else {
        return Verdict::Drop;
    };
    let message = format!("{}", err)
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .to_string();
    if v.get("method").and_then(Value::as_str) == Some("tools/call") {
        let e = HandoffError::validation(format!(
            "the request holds a JSON object with a {message}; give each key once"
        ));
        let request_id = uuid::Uuid::now_v7();
        tracing::info!(%request_id, error_code = "VALIDATION_ERROR", "tool call with a duplicated JSON key");
        return Verdict::Reply(tool_error_line(id, &e, request_id));
    }
    Verdict::Reply(error_line(
        Some(&id),
        INVALID_REQUEST,
        &format!("Invalid Request: {message}"),
        None,
    ))
}

/// For a line `check` passed that is not a tool call (those are read by
/// `transport::tool_calls` itself): an object rmcp will read, or an
/// invalid request.
pub fn shape(line: &[u8]) -> Verdict {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let first = line.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // An array (a batch, which no MCP revision in use sends), a string,
        // a number: not a request, and no id to answer.
        return Verdict::Reply(error_line(
            None,
            INVALID_REQUEST,
            "Invalid Request: a message is a JSON object",
            None,
        ));
    }
    if serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line).is_ok() {
        return Verdict::Pass;
    }
    // rmcp answers these with `id: null` (or ignores a few notifications
    // for compatibility); a request whose id can be read gets its answer
    // under that id.
    let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
    match (request_id(&v), v.get("method")) {
        (Some(id), Some(Value::String(_))) => Verdict::Reply(error_line(
            Some(&id),
            INVALID_REQUEST,
            "Invalid Request: not a valid JSON-RPC 2.0 request",
            None,
        )),
        _ => Verdict::Pass,
    }
}

/// The `id` of a request: a string or an integer (JSON-RPC also allows
/// null, which cannot be answered apart from a parse error's).
fn request_id(v: &Value) -> Option<RequestId> {
    match v.get("id")? {
        Value::String(s) => Some(RequestId::String(s.as_str().into())),
        Value::Number(n) => n.as_i64().map(RequestId::Number),
        _ => None,
    }
}

/// The answer to a line longer than `limit` bytes, which was not buffered:
/// only its first and last bytes were kept (`head`, `tail`), where the
/// SDKs put the id (the Python SDK first, the TypeScript SDK last).
pub fn oversized_reply(head: &[u8], tail: &[u8], size: usize, limit: usize) -> Vec<u8> {
    let id = head_id(head).or_else(|| tail_id(tail));
    let data = serde_json::json!({
        "error_code": "PAYLOAD_TOO_LARGE",
        "limit_bytes": limit,
        "actual_bytes": size,
    });
    error_line(
        id.as_ref(),
        INVALID_REQUEST,
        &format!("Invalid Request: the message is {size} bytes or more; the limit is {limit}"),
        Some(data),
    )
}

/// `{"jsonrpc":"2.0","id":…` at the start of a message.
fn head_id(head: &[u8]) -> Option<RequestId> {
    let s = std::str::from_utf8(head)
        .or_else(|e| std::str::from_utf8(&head[..e.valid_up_to()]))
        .ok()?;
    let s = s.trim_start().strip_prefix('{')?.trim_start();
    let s = match s.strip_prefix(r#""jsonrpc""#) {
        Some(rest) => rest
            .trim_start()
            .strip_prefix(':')?
            .trim_start()
            .strip_prefix(r#""2.0""#)?
            .trim_start()
            .strip_prefix(',')?
            .trim_start(),
        None => s,
    };
    let s = s.strip_prefix(r#""id""#)?.trim_start().strip_prefix(':')?;
    scalar_id(s.trim_start(), true)
}

/// `…,"id":…}` at the end of a message: the last member of the top-level
/// object (one closing brace after it, so not a nested object's `id`).
fn tail_id(tail: &[u8]) -> Option<RequestId> {
    let start = (0..=tail.len().min(4))
        .find(|i| std::str::from_utf8(&tail[*i..]).is_ok())
        .unwrap_or(0);
    let s = std::str::from_utf8(&tail[start..]).ok()?;
    let s = s.trim_end().strip_suffix('}')?.trim_end();
    let at = s.rfind(r#""id""#)?;
    let (before, after) = s.split_at(at);
    if !matches!(before.trim_end().chars().last(), Some(',') | Some('{')) {
        return None;
    }
    let value = after[4..].trim_start().strip_prefix(':')?.trim_start();
    scalar_id(value, false)
}

/// An integer or a plain string (no escapes) at the start of `s`; the
/// whole of `s` unless `prefix_only`.
fn scalar_id(s: &str, prefix_only: bool) -> Option<RequestId> {
    if let Some(rest) = s.strip_prefix('"') {
        let end = rest.find('"')?;
        let id = &rest[..end];
        if id.contains('\\') || (!prefix_only && !rest[end + 1..].trim().is_empty()) {
            return None;
        }
        return Some(RequestId::String(id.into()));
    }
    let digits = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(s.len(), |(i, _)| i);
    if !prefix_only && !s[digits..].trim().is_empty() {
        return None;
    }
    s[..digits].parse().ok().map(RequestId::Number)
}

/// A JSON-RPC error response line.
fn error_line(id: Option<&RequestId>, code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(d) = data {
        error["data"] = d;
    }
    let v = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error});
    let mut line = serde_json::to_vec(&v).unwrap_or_default();
    line.push(b'\n');
    line
}

/// A tool result carrying `e` (as every tool failure does), as a response
/// line for `id`.
fn tool_error_line(id: RequestId, e: &HandoffError, request_id: uuid::Uuid) -> Vec<u8> {
    let result = reply::failure(e, request_id);
    let msg: TxJsonRpcMessage<RoleServer> = JsonRpcMessage::Response(JsonRpcResponse {
        jsonrpc: JsonRpcVersion2_0,
        id,
        result: ServerResult::CallToolResult(result),
    });
    let mut line = serde_json::to_vec(&msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Walks any JSON value, failing on an object key given twice.
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Objects are small: a linear scan until they are not.
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            let seen = match &mut many {
                Some(set) => !set.insert(k.clone()),
                None if few.len() < 16 => {
                    let seen = few.contains(&k);
                    few.push(k.clone());
                    seen
                }
                None => {
                    let mut set: HashSet<_> = few.drain(..).collect();
                    let seen = !set.insert(k.clone());
                    many = Some(set);
                    seen
                }
            };
            if seen {
                let shown: String = k.chars().take(64).collect();
                return Err(de::Error::custom(format!("duplicate key {shown:?}")));
            }
            map.next_value_seed(Walk)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(line: &str) -> Value {
        let verdict = match check(line.as_bytes()) {
            Verdict::Pass => shape(line.as_bytes()),
            other => other,
        };
        match verdict {
            Verdict::Reply(l) => serde_json::from_slice(&l).expect("a JSON line"),
            other => panic!("{line}: expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn unparsable_lines_get_a_parse_error_with_a_null_id() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for line in [
            "garbage",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":"\ud800"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":1e400}"#,
            &deep,
            r#"{"jsonrpc":"2.0","id":1"#,
            "{} {}",
        ] {
            let r = reply(line);
            assert_eq!(r["error"]["code"], PARSE_ERROR, "{line}");
            assert_eq!(r["id"], Value::Null, "{line}");
        }
    }

    #[test]
    fn a_duplicated_key_is_refused_under_the_requests_id() {
        let r = reply(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_context","arguments":{"session_key":"a","session_key":"b"}}}"#,
        );
        assert_eq!(r["id"], 7);
        assert_eq!(r["result"]["isError"], true);
        let body = &r["result"]["structuredContent"];
        assert_eq!(body["error_code"], "VALIDATION_ERROR");
        assert!(
            body["error"].as_str().unwrap().contains("session_key"),
            "{r}"
        );
        let r = reply(r#"{"jsonrpc":"2.0","id":"x","id":"y","method":"ping"}"#);
        assert_eq!(
            (r["id"].clone(), r["error"]["code"].clone()),
            ("y".into(), INVALID_REQUEST.into())
        );
        // A notification cannot be answered.
        assert_eq!(
            check(br#"{"jsonrpc":"2.0","method":"notifications/initialized","a":1,"a":2}"#),
            Verdict::Drop
        );
        // Many keys: the set path.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":1")).collect();
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{{},"k3":2}}}}"#,
            many.join(",")
        );
        assert_eq!(reply(&line)["error"]["code"], INVALID_REQUEST);
    }

    #[test]
    fn messages_pass_and_wrong_shapes_are_invalid_requests() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":{"a":1}}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ] {
            assert_eq!(check(line.as_bytes()), Verdict::Pass, "{line}");
            assert_eq!(shape(line.as_bytes()), Verdict::Pass, "{line}");
        }
        let r = reply(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        assert_eq!(
            (r["id"].clone(), r["error"]["code"].clone()),
            (Value::Null, INVALID_REQUEST.into())
        );
        let r = reply(r#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#);
        assert_eq!(
            (r["id"].clone(), r["error"]["code"].clone()),
            (3.into(), INVALID_REQUEST.into())
        );
    }

    #[test]
    fn an_oversized_message_is_answered_under_the_id_it_shows() {
        let r: Value = serde_json::from_slice(&oversized_reply(
            br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"#,
            b"xxxx",
            10,
            5,
        ))
        .unwrap();
        assert_eq!(r["id"], 42);
        assert_eq!(r["error"]["data"]["error_code"], "PAYLOAD_TOO_LARGE");
        let r: Value = serde_json::from_slice(&oversized_reply(
            br#"{"method":"tools/call","params":{"#,
            br#"aaaa"}},"jsonrpc":"2.0","id":"req-9"}"#,
            10,
            5,
        ))
        .unwrap();
        assert_eq!(r["id"], "req-9");
        // A nested id is not the request's.
        let r: Value =
            serde_json::from_slice(&oversized_reply(b"{", br#"{"id":5}}"#, 10, 5)).unwrap();
        assert_eq!(r["id"], Value::Null);
    }
}
