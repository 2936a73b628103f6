//! The shape of every tool result (contract §1): one text item holding a
//! JSON object, and the same object as `structuredContent`.
//!
//! A successful result's object is serialised once, to its text. rmcp wants
//! `structuredContent` as a `serde_json::Value`, which would be built from
//! the reply, written out and dropped again (server CPU per call ÷1.07
//! without it, `ops/bench` load at concurrency 32). A transport that
//! writes tool results itself (the stdio one, `transport::tool_calls`) asks
//! for results marked `STRUCTURED_IS_TEXT` instead and writes the text's
//! bytes a second time as the structured content. Any other transport gets
//! the `Value`.

use handoff_actors::model::json_string;
use handoff_actors::{ErrorCode, HandoffError};
use rmcp::model::{CallToolResult, ContentBlock, MetaObject};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// `_meta` key marking a result whose `structuredContent` is its one text
/// item, parsed, for the transport to write (and to remove the mark). A
/// mark that reached a client unexpanded would be visible: no structured
/// content, which clients refuse for tools with an output schema.
pub const STRUCTURED_IS_TEXT: &str = "handoff/structured-content-is-text";

/// A successful result from the reply's JSON text (a JSON object).
pub fn success(json: String, structured_in_transport: bool) -> CallToolResult {
    if structured_in_transport {
        let mut r = CallToolResult::success(vec![ContentBlock::text(json)]);
        let mut meta = MetaObject::default();
        meta.0.insert(STRUCTURED_IS_TEXT.into(), Value::Bool(true));
        r.meta = Some(meta);
        return r;
    }
    // The text is serde_json's output for a struct: it parses, unless
    // nested deeper than serde_json's 128 levels (arguments are read with
    // the same limit, so no reply built from them is).
    let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
    let mut r = CallToolResult::success(vec![ContentBlock::text(json)]);
    r.structured_content = Some(v);
    r
}

/// `r`'s text, when `r` is marked to have it written again as its
/// structured content.
pub fn structured_text(r: &CallToolResult) -> Option<&str> {
    let marked = r
        .meta
        .as_ref()
        .is_some_and(|m| m.0.contains_key(STRUCTURED_IS_TEXT));
    only_text(r).filter(|_| marked)
}

/// The text of a result whose content is one text item, as `success`
/// makes it.
pub fn only_text(r: &CallToolResult) -> Option<&str> {
    match r.content.as_slice() {
        [block] => block.as_text().map(|t| t.text.as_str()),
        _ => None,
    }
}

/// Removes the mark of `structured_text` (and `_meta` with it, if that
/// was all it held).
pub fn clear_structured_mark(r: &mut CallToolResult) {
    if let Some(meta) = r.meta.as_mut() {
        meta.0.remove(STRUCTURED_IS_TEXT);
        if meta.0.is_empty() {
            r.meta = None;
        }
    }
}

/// What a failed call returns: a tool result's `structuredContent` (and its
/// text), or a protocol error's `data`. The `ToolError` of every published
/// output schema is derived from this type (`tools::schema::with_error_shape`).
#[derive(Serialize, JsonSchema)]
#[schemars(description = "A failed call (isError: true).")]
pub struct ToolError {
    #[schemars(extend("const" = false))]
    success: bool,
    error: String,
    #[schemars(schema_with = "error_codes")]
    error_code: &'static str,
    details: Map<String, Value>,
    retryable: bool,
    /// The id the server's log has this call under.
    request_id: String,
    timestamp: String,
}

impl ToolError {
    pub fn new(e: &HandoffError, request_id: Uuid) -> Self {
        ToolError {
            success: false,
            error: e.message.clone(),
            error_code: e.code.as_str(),
            details: e.details.clone(),
            retryable: e.code.retryable(),
            request_id: request_id.to_string(),
            timestamp: handoff_actors::model::rfc3339(&handoff_actors::model::now()),
        }
    }
}

/// `error_code`: one of the codes, named as `ErrorCode::as_str` names them.
fn error_codes(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    schemars::json_schema!({"type": "string", "enum": codes})
}

pub fn error_json(e: &HandoffError, request_id: Uuid) -> Value {
    serde_json::to_value(ToolError::new(e, request_id)).unwrap_or(Value::Null)
}

pub fn failure(e: &HandoffError, request_id: Uuid) -> CallToolResult {
    let v = error_json(e, request_id);
    let mut r = CallToolResult::error(vec![ContentBlock::text(json_string(&v))]);
    r.structured_content = Some(v);
    r
}

/// For protocol-level errors (resources, unknown tools): the same fields in
/// the JSON-RPC error's `data`.
pub fn protocol_error(e: &HandoffError, request_id: Uuid) -> rmcp::ErrorData {
    use handoff_actors::ErrorCode as C;
    use rmcp::model::ErrorCode as Rpc;
    let code = match e.code {
        C::NotFound | C::SessionNotFound | C::HandoffNotFound => Rpc::RESOURCE_NOT_FOUND,
        C::ValidationError | C::PayloadTooLarge => Rpc::INVALID_PARAMS,
        // No JSON-RPC code says "not allowed"; `data.error_code` does.
        C::Forbidden | C::Unauthorized => Rpc::INVALID_REQUEST,
        _ => Rpc::INTERNAL_ERROR,
    };
    rmcp::ErrorData::new(code, e.message.clone(), Some(error_json(e, request_id)))
}
