//! The tool catalogue: one module per tool, each with its argument struct,
//! validation and handler. Schemas in `tools/list` are generated from the
//! same types that parse the calls.

pub mod debug_crash_session;
pub mod delete_session;
pub mod get_context;
pub mod register_session;
pub mod request_handoff;
pub mod update_context;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use handoff_actors::HandoffError;
use rmcp::model::{JsonObject, Tool};
use serde::Serialize;
use serde_json::Value;

use super::args::{self, ToolArgs};
use super::context::Ctx;

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

        async fn route(ctx: Ctx, name: &str, raw: Option<JsonObject>, cat: &Catalog)
            -> Option<Result<Value, HandoffError>> {
            Some(match name {
                $($m::NAME => run(ctx, raw, cat.fields($m::NAME), $m::call).await,)*
                _ => return None,
            })
        }
    };
}

catalog!(
    register_session,
    update_context,
    request_handoff,
    get_context,
    delete_session,
    debug_crash_session,
);

impl Catalog {
    pub fn new(test_hooks: bool) -> Self {
        let tools: Vec<Tool> = definitions()
            .into_iter()
            .filter(|t| test_hooks || t.name != debug_crash_session::NAME)
            .map(|mut t| {
                t.input_schema = Arc::new(portable(&t.input_schema));
                t.output_schema = t.output_schema.map(|s| Arc::new(portable(&s)));
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

    /// Run a tool by name; `None` when no such tool is offered. The
    /// original server's camelCase tool names are accepted too.
    pub async fn call(
        &self,
        ctx: Ctx,
        name: &str,
        raw: Option<JsonObject>,
    ) -> Option<Result<Value, HandoffError>> {
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

async fn run<A, O, F, Fut>(
    ctx: Ctx,
    raw: Option<JsonObject>,
    fields: &HashSet<String>,
    f: F,
) -> Result<Value, HandoffError>
where
    A: ToolArgs,
    O: Serialize,
    F: FnOnce(Ctx, A) -> Fut,
    Fut: Future<Output = Result<O, HandoffError>>,
{
    let a: A = args::parse(raw, fields, ctx.cfg.unknown_fields)?;
    let out = f(ctx, a).await?;
    serde_json::to_value(out)
        .map_err(|e| HandoffError::internal(format!("encoding the reply: {e}")))
}
