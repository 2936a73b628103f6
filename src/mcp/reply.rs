//! The shape of every tool result (contract §1): one text item holding a
//! JSON object, and the same object as `structuredContent`.

use handoff_actors::model::json_string;
use handoff_actors::HandoffError;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{json, Value};
use uuid::Uuid;

pub fn success(v: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(json_string(&v))]);
    r.structured_content = Some(v);
    r
}

pub fn error_json(e: &HandoffError, request_id: Uuid) -> Value {
    json!({
        "success": false,
        "error": e.message,
        "error_code": e.code.as_str(),
        "details": e.details,
        "retryable": e.code.retryable(),
        "request_id": request_id.to_string(),
        "timestamp": handoff_actors::model::rfc3339(&handoff_actors::model::now()),
    })
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
        _ => Rpc::INTERNAL_ERROR,
    };
    rmcp::ErrorData::new(code, e.message.clone(), Some(error_json(e, request_id)))
}
