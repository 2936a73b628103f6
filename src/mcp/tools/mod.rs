//! The tool catalogue: one module per tool, each with its argument struct,
//! validation and handler. Schemas in `tools/list` are generated from the
//! same types that parse the calls.

pub mod accept_handoff;
pub mod analyze_codebase;
pub mod debug_crash_session;
pub mod debug_panic_job;
pub mod delete_session;
pub mod get_configuration;
pub mod get_context;
pub mod get_job_status;
pub mod list_handoffs;
pub mod manage_configuration_backup;
pub mod register_session;
pub mod request_handoff;
pub mod run_job_now;
pub mod search_context;
pub mod update_configuration;
pub mod update_context;
pub mod update_job_config;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use handoff_actors::HandoffError;
use rmcp::model::{JsonObject, Tool};
use serde::Serialize;
use serde_json::Value;

use super::args::{self, ToolArgs};
use super::context::Ctx;
use crate::config::UnknownFields;

pub struct Catalog {
    pub tools: Vec<Tool>,
    /// Each tool's argument field names, from its published input schema.
    fields: HashMap<String, HashSet<String>>,
}

macro_rules! catalog {
    ($($m:ident),* $(,)?) => {
        fn definitions() -> Vec<Tool> {
            vec![$(
                Tool::new($m::NAME, $m::DESCRIPTION, Arc::new(JsonObject::new()))
                    .with_input_schema::<$m::Args>()
                    .with_output_schema::<$m::Out>()
            ),*]
        }

        /// Parse `raw` as the arguments of tool `name`, as a call does
        /// (spellings, unknown fields, types); `None` for an unknown tool.
        fn decode_args(name: &str, raw: Option<JsonObject>, cat: &Catalog, policy: UnknownFields)
            -> Option<Result<(), HandoffError>> {
            let name = args::snake_case(name);
            let fields = cat.fields.get(&name)?;
            Some(match name.as_str() {
                $($m::NAME => args::parse::<$m::Args>(raw, fields, policy).map(|_| ()),)*
                _ => return None,
            })
        }

        async fn route(ctx: Ctx, name: &str, raw: Option<JsonObject>, cat: &Catalog)
            -> Option<Result<String, HandoffError>> {
            Some(match name {
                $($m::NAME => run(ctx, raw, cat.fields($m::NAME), $m::NAME, $m::call).await,)*
                _ => return None,
            })
        }
    };
}

catalog!(
    register_session,
    update_context,
    request_handoff,
    list_handoffs,
    accept_handoff,
    get_context,
    search_context,
    delete_session,
    analyze_codebase,
    get_configuration,
    update_configuration,
    manage_configuration_backup,
    get_job_status,
    run_job_now,
    update_job_config,
    debug_crash_session,
    debug_panic_job,
);

impl Catalog {
    pub fn new(test_hooks: bool) -> Self {
        let tools: Vec<Tool> = definitions()
            .into_iter()
            .filter(|t| {
                test_hooks
                    || (t.name != debug_crash_session::NAME && t.name != debug_panic_job::NAME)
            })
            .map(|mut t| {
                t.input_schema = Arc::new(lenient_input(portable(&t.input_schema)));
                t.output_schema = t
                    .output_schema
                    .map(|s| Arc::new(with_error_shape(portable(&s))));
                t
            })
            .collect();
        let fields = tools
            .iter()
            .map(|t| (t.name.to_string(), args::schema_fields(&t.input_schema)))
            .collect();
        Catalog { tools, fields }
    }

    fn fields(&self, name: &str) -> &HashSet<String> {
        &self.fields[name]
    }

    /// Decode a call's arguments without running it (the fuzz target
    /// `tool_args` drives every tool through this).
    pub fn decode(
        &self,
        name: &str,
        raw: Option<JsonObject>,
        policy: UnknownFields,
    ) -> Option<Result<(), HandoffError>> {
        decode_args(name, raw, self, policy)
    }

    /// Run a tool by name; `None` when no such tool is offered. The
    /// original server's camelCase tool names are accepted too.
    pub async fn call(
        &self,
        ctx: Ctx,
        name: &str,
        raw: Option<JsonObject>,
    ) -> Option<Result<String, HandoffError>> {
        let name = args::snake_case(name);
        if !self.fields.contains_key(&name) {
            return None;
        }
        route(ctx, &name, raw, self).await
    }
}

/// schemars marks Rust integer widths with formats such as `uint` that
/// JSON Schema validators in clients (ajv in the TypeScript SDK) do not know
/// and warn about on every call; the bounds stay as `minimum`.
fn portable(schema: &JsonObject) -> JsonObject {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                let numeric = m.get("format").and_then(Value::as_str).is_some_and(|f| {
                    f.starts_with("uint") || f.starts_with("int") || f == "double" || f == "float"
                });
                if numeric {
                    m.remove("format");
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = Value::Object(schema.clone());
    walk(&mut v);
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object stays an object"),
    }
}

/// The server accepts camelCase spellings and (by policy) unknown fields
/// and reports them itself, with the contract's error; a client that checks
/// arguments against the schema must not refuse them first.
fn lenient_input(mut schema: JsonObject) -> JsonObject {
    schema.remove("additionalProperties");
    schema
}

/// A failed call carries the error object as `structuredContent`, and
/// clients (the TypeScript SDK) check it against `outputSchema` even when
/// `isError` is set: the published schema is "success shape or error shape".
fn with_error_shape(success: JsonObject) -> JsonObject {
    let mut success = success;
    let schema_uri = success.remove("$schema");
    let mut defs = match success.remove("$defs") {
        Some(Value::Object(d)) => d,
        _ => JsonObject::new(),
    };
    defs.insert(
        "ToolError".into(),
        serde_json::json!({
            "type": "object",
            "description": "A failed call (isError: true).",
            "properties": {
                "success": {"const": false},
                "error": {"type": "string"},
                "error_code": {"type": "string", "enum": [
                    "VALIDATION_ERROR", "PAYLOAD_TOO_LARGE", "SESSION_NOT_FOUND", "SESSION_EXISTS",
                    "SESSION_NOT_ACTIVE", "HANDOFF_NOT_FOUND", "NOT_FOUND", "UNAUTHORIZED",
                    "FORBIDDEN", "RATE_LIMITED", "STORAGE_UNAVAILABLE", "INTERNAL_ERROR"]},
                "details": {"type": "object"},
                "retryable": {"type": "boolean"},
                "request_id": {"type": "string"},
                "timestamp": {"type": "string"}
            },
            "required": ["success", "error", "error_code", "details", "retryable", "request_id", "timestamp"]
        }),
    );
    let mut out = JsonObject::new();
    if let Some(uri) = schema_uri {
        out.insert("$schema".into(), uri);
    }
    out.insert("type".into(), "object".into());
    // What both shapes share, visible without resolving the anyOf.
    out.insert(
        "properties".into(),
        serde_json::json!({"success": {"type": "boolean", "description": "true on success; false with isError on failure"}}),
    );
    out.insert("required".into(), serde_json::json!(["success"]));
    out.insert(
        "anyOf".into(),
        Value::Array(vec![
            Value::Object(success),
            serde_json::json!({"$ref": "#/$defs/ToolError"}),
        ]),
    );
    out.insert("$defs".into(), Value::Object(defs));
    out
}

async fn run<A, O, F, Fut>(
    ctx: Ctx,
    raw: Option<JsonObject>,
    fields: &HashSet<String>,
    tool: &str,
    f: F,
) -> Result<String, HandoffError>
where
    A: ToolArgs,
    O: Serialize,
    F: FnOnce(Ctx, A) -> Fut,
    Fut: Future<Output = Result<O, HandoffError>>,
{
    let a: A = args::parse(raw, fields, ctx.cfg.unknown_fields)?;
    // monitoring.slow_call_threshold applies live: read on every call.
    let slow = ctx.cfg.live.settings().monitoring.slow_call_threshold;
    let started = std::time::Instant::now();
    let out = f(ctx, a).await;
    let took = started.elapsed();
    if took > slow {
        tracing::warn!(
            tool,
            duration_ms = took.as_millis() as u64,
            threshold_ms = slow.as_millis() as u64,
            "slow tool call"
        );
    }
    // Straight to its JSON text, once: the reply's text and its structured
    // content are both this text (see `reply::success`).
    let out = out?;
    serde_json::to_string(&out)
        .map_err(|e| HandoffError::internal(format!("encoding the reply: {e}")))
}
