//! The tool catalogue: one module per tool, each with its argument struct,
//! validation and handler. Schemas in `tools/list` are generated from the
//! same types that parse the calls.

pub mod accept_handoff;
pub mod analyze_codebase;
#[cfg(feature = "test-hooks")]
pub mod debug_crash_session;
#[cfg(feature = "test-hooks")]
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

mod schema;

use schema::{error_schema, lenient_input, portable, with_error_shape};

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use handoff_actors::HandoffError;
use rmcp::model::{JsonObject, Tool};
use serde::Serialize;

use super::args::{self, ToolArgs};
use super::context::Ctx;
use crate::config::UnknownFields;

pub struct Catalog {
    pub tools: Vec<Tool>,
    /// Each tool's argument field names, from its published input schema.
    fields: HashMap<String, HashSet<String>>,
}

macro_rules! catalog {
    ($($(#[$when:meta])* $m:ident),* $(,)?) => {
        // Pushed one by one, not `vec![…]`: an entry may be cfg'd out.
        #[allow(clippy::vec_init_then_push)]
        fn definitions() -> Vec<Tool> {
            let mut tools = Vec::new();
            $(
                $(#[$when])*
                tools.push(Tool::new($m::NAME, $m::DESCRIPTION, Arc::new(JsonObject::new()))
                    .with_input_schema::<$m::Args>()
                    .with_output_schema::<$m::Out>());
            )*
            tools
        }

        /// Parse `raw` as the arguments of tool `name`, as a call does
        /// (spellings, unknown fields, types); `None` for an unknown tool.
        fn decode_args(name: &str, raw: Option<JsonObject>, cat: &Catalog, policy: UnknownFields)
            -> Option<Result<(), HandoffError>> {
            let name = args::snake_case(name);
            let fields = cat.fields.get(&name)?;
            Some(match name.as_str() {
                $($(#[$when])* $m::NAME => args::parse::<$m::Args>(raw, fields, policy).map(|_| ()),)*
                _ => return None,
            })
        }

        async fn route(ctx: Ctx, name: &str, raw: Option<JsonObject>, cat: &Catalog)
            -> Option<Result<String, HandoffError>> {
            Some(match name {
                $($(#[$when])* $m::NAME => run(ctx, raw, cat.fields($m::NAME), $m::NAME, $m::call).await,)*
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
    // Test hooks: only in builds with the `test-hooks` feature (the test
    // suite's), and listed only when `test_hooks` is also set.
    #[cfg(feature = "test-hooks")]
    debug_crash_session,
    #[cfg(feature = "test-hooks")]
    debug_panic_job,
);

/// The test hooks' tool names (none in a release build).
#[cfg(feature = "test-hooks")]
const TEST_HOOK_TOOLS: &[&str] = &[debug_crash_session::NAME, debug_panic_job::NAME];
#[cfg(not(feature = "test-hooks"))]
const TEST_HOOK_TOOLS: &[&str] = &[];

impl Catalog {
    pub fn new(test_hooks: bool) -> Self {
        // Derived once, shared by every tool's output schema.
        let error = error_schema();
        let tools: Vec<Tool> = definitions()
            .into_iter()
            .filter(|t| test_hooks || !TEST_HOOK_TOOLS.contains(&&*t.name))
            .map(|mut t| {
                t.input_schema = Arc::new(portable(&lenient_input((*t.input_schema).clone())));
                t.output_schema = t
                    .output_schema
                    .map(|s| Arc::new(portable(&with_error_shape((*s).clone(), &error))));
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
