//! The tool catalogue: one module per tool, each with its argument struct,
//! validation and handler. Schemas in `tools/list` are generated from the
//! same types that parse the calls.

pub mod debug_crash_session;
pub mod delete_session;
pub mod get_context;
pub mod register_session;
pub mod request_handoff;
pub mod update_context;

use std::collections::HashMap;
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
    schemas: HashMap<String, Arc<JsonObject>>,
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
                $($m::NAME => run(ctx, raw, cat.schema($m::NAME), $m::call).await,)*
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
            .collect();
        let schemas = tools
            .iter()
            .map(|t| (t.name.to_string(), t.input_schema.clone()))
            .collect();
        Catalog { tools, schemas }
    }

    fn schema(&self, name: &str) -> &Arc<JsonObject> {
        &self.schemas[name]
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
        if !self.schemas.contains_key(&name) {
            return None;
        }
        route(ctx, &name, raw, self).await
    }
}

async fn run<A, O, F, Fut>(
    ctx: Ctx,
    raw: Option<JsonObject>,
    schema: &Arc<JsonObject>,
    f: F,
) -> Result<Value, HandoffError>
where
    A: ToolArgs,
    O: Serialize,
    F: FnOnce(Ctx, A) -> Fut,
    Fut: Future<Output = Result<O, HandoffError>>,
{
    let a: A = args::parse(raw, schema, ctx.cfg.unknown_fields)?;
    let out = f(ctx, a).await?;
    serde_json::to_value(out)
        .map_err(|e| HandoffError::internal(format!("encoding the reply: {e}")))
}
