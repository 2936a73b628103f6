//! Turning a raw `arguments` object into a typed argument struct.
//!
//! The contract accepts every field in snake_case and camelCase (the
//! original server's code used one, its docs the other), rejects a field
//! given in both spellings, and rejects (or, by policy, drops) unknown
//! fields, naming them. The known fields come from the same JSON Schema that
//! `tools/list` publishes, so the schema and the check cannot drift apart.

use std::collections::HashSet;

use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::config::UnknownFields;

/// `sessionKey` → `session_key`. Snake-case input passes unchanged.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The property names a schema declares.
pub fn schema_fields(schema: &Map<String, Value>) -> HashSet<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Rename camelCase keys and apply `aliases` (alternative → canonical), then
/// check against `known`. Errors name the offending field.
pub fn normalize(
    raw: Map<String, Value>,
    known: &HashSet<String>,
    aliases: &[(&str, &str)],
    policy: UnknownFields,
    path: &str,
) -> Result<Map<String, Value>, HandoffError> {
    let mut out = Map::with_capacity(raw.len());
    let mut given_as: Vec<(String, String)> = Vec::new();
    let mut unknown = Vec::new();
    for (k, v) in raw {
        let mut canon = snake_case(&k);
        if let Some((_, to)) = aliases.iter().find(|(from, _)| *from == canon) {
            canon = to.to_string();
        }
        if !known.contains(&canon) {
            unknown.push(format!("{path}{k}"));
            continue;
        }
        if let Some((_, first)) = given_as.iter().find(|(c, _)| *c == canon) {
            return Err(HandoffError::validation(format!(
                "field '{path}{canon}' given twice (as '{first}' and '{k}'); use one spelling"
            ))
            .detail("field", format!("{path}{canon}")));
        }
        given_as.push((canon.clone(), k));
        out.insert(canon, v);
    }
    if !unknown.is_empty() && policy == UnknownFields::Reject {
        return Err(
            HandoffError::validation(format!("unknown field(s): {}", unknown.join(", ")))
                .detail("unknown_fields", unknown),
        );
    }
    Ok(out)
}

/// Deserialize with the failing field's path in the error.
pub fn typed<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, HandoffError> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let msg = if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        };
        // serde names a missing field only in its message.
        let field = if path != "." && !path.is_empty() {
            Some(path)
        } else {
            msg.strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
                .map(str::to_string)
        };
        let mut err = HandoffError::validation(msg);
        if let Some(f) = field {
            err = err.detail("field", f);
        }
        err
    })
}

/// One tool's argument type: its schema and its extra aliases.
pub trait ToolArgs: DeserializeOwned + JsonSchema + 'static {
    /// Alternative spellings beyond camelCase: (alternative, canonical).
    const ALIASES: &'static [(&'static str, &'static str)] = &[];

    /// Normalise nested objects (e.g. batch entries) before typing.
    fn prepare(_map: &mut Map<String, Value>, _policy: UnknownFields) -> Result<(), HandoffError> {
        Ok(())
    }
}

/// Parse `arguments` into `T` under the contract's spelling rules; `known`
/// is the field set of the tool's published input schema.
pub fn parse<T: ToolArgs>(
    raw: Option<Map<String, Value>>,
    known: &HashSet<String>,
    policy: UnknownFields,
) -> Result<T, HandoffError> {
    let mut map = normalize(raw.unwrap_or_default(), known, T::ALIASES, policy, "")?;
    T::prepare(&mut map, policy)?;
    typed(map)
}

// ---- limits (contract §2) ---------------------------------------------------

use handoff_actors::ErrorCode;

use crate::config::Config;

/// Characters an identifier must not hold because a reader cannot see
/// them, or sees something else: control characters, Unicode format
/// characters (category Cf: bidi overrides and isolates such as U+202E,
/// zero-width spaces and joiners such as U+200B, the BOM, tag characters)
/// and the line and paragraph separators. Two keys that look alike on a
/// screen must not name two sessions, and a key shown in a listing must
/// not reorder the text around it.
pub fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
            | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
            | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

/// The character rules of every identifier (session keys, agent ids,
/// names): nothing invisible (see `invisible`), not only whitespace.
fn identifier_chars(field: &str, v: &str) -> Result<(), HandoffError> {
    if let Some(c) = v.chars().find(|c| invisible(*c)) {
        return Err(HandoffError::validation(format!(
            "{field} must not contain control or invisible format characters (found U+{:04X})",
            c as u32
        ))
        .detail("field", field));
    }
    if v.chars().all(char::is_whitespace) {
        return Err(
            HandoffError::validation(format!("{field} must not be blank")).detail("field", field),
        );
    }
    Ok(())
}

pub fn session_key(cfg: &Config, v: &str) -> Result<(), HandoffError> {
    if v.is_empty() || v.len() > cfg.max_session_key_bytes {
        return Err(HandoffError::validation(format!(
            "session_key must be 1–{} bytes (got {})",
            cfg.max_session_key_bytes,
            v.len()
        ))
        .detail("field", "session_key"));
    }
    identifier_chars("session_key", v)
}

pub fn agent_id(cfg: &Config, field: &str, v: &str) -> Result<(), HandoffError> {
    if v.is_empty() || v.len() > cfg.max_agent_id_bytes {
        return Err(HandoffError::validation(format!(
            "{field} must be 1–{} bytes (got {})",
            cfg.max_agent_id_bytes,
            v.len()
        ))
        .detail("field", field));
    }
    identifier_chars(field, v)
}

pub fn content(cfg: &Config, field: &str, v: &str) -> Result<(), HandoffError> {
    if v.is_empty() {
        return Err(
            HandoffError::validation(format!("{field} must not be empty")).detail("field", field),
        );
    }
    if v.len() > cfg.max_content_bytes {
        return Err(HandoffError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "{field} is {} bytes; the limit is {}",
                v.len(),
                cfg.max_content_bytes
            ),
        )
        .detail("field", field)
        .detail("limit_bytes", cfg.max_content_bytes)
        .detail("actual_bytes", v.len()));
    }
    Ok(())
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Bytes of `v` as compact JSON, counted without building the text.
fn serialised_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

pub fn metadata(cfg: &Config, field: &str, v: &Option<Value>) -> Result<(), HandoffError> {
    let Some(v) = v else { return Ok(()) };
    if !v.is_object() {
        return Err(
            HandoffError::validation(format!("{field} must be a JSON object"))
                .detail("field", field),
        );
    }
    let size = serialised_len(v);
    if size > cfg.max_metadata_bytes {
        return Err(HandoffError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "{field} is {size} bytes serialised; the limit is {}",
                cfg.max_metadata_bytes
            ),
        )
        .detail("field", field)
        .detail("limit_bytes", cfg.max_metadata_bytes)
        .detail("actual_bytes", size));
    }
    let d = depth(v);
    if d > cfg.max_metadata_depth {
        return Err(HandoffError::validation(format!(
            "{field} is nested {d} levels deep; the limit is {}",
            cfg.max_metadata_depth
        ))
        .detail("field", field));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(f: &[&str]) -> HashSet<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn camel_and_snake_both_accepted_but_not_together() {
        let k = known(&["session_key", "agent_from"]);
        let m = serde_json::json!({"sessionKey": "a", "agent_from": "b"});
        let out = normalize(
            m.as_object().unwrap().clone(),
            &k,
            &[],
            UnknownFields::Reject,
            "",
        )
        .unwrap();
        assert_eq!(out["session_key"], "a");
        let m = serde_json::json!({"sessionKey": "a", "session_key": "b"});
        let e = normalize(
            m.as_object().unwrap().clone(),
            &k,
            &[],
            UnknownFields::Reject,
            "",
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
    }

    #[test]
    fn unknown_fields_by_policy() {
        let k = known(&["session_key"]);
        let m = serde_json::json!({"session_key": "a", "bogus": 1});
        let e = normalize(
            m.as_object().unwrap().clone(),
            &k,
            &[],
            UnknownFields::Reject,
            "",
        )
        .unwrap_err();
        assert!(e.message.contains("bogus"));
        let out = normalize(
            m.as_object().unwrap().clone(),
            &k,
            &[],
            UnknownFields::Ignore,
            "",
        )
        .unwrap();
        assert_eq!(out.len(), 1);
    }
}
