//! `debug_panic_job` (only with HANDOFF_TEST_HOOKS=true): the job's next
//! run panics, to show that its supervisor restarts it and the failure is
//! recorded.

use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::args::ToolArgs;
use crate::mcp::context::Ctx;

pub const NAME: &str = "debug_panic_job";
pub const DESCRIPTION: &str = "Test hook: make the job's next run panic.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub job_name: String,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    ctx.core.job_status(Some(&a.job_name))?;
    ctx.core.jobs.panic_next_run(&a.job_name);
    Ok(Out { success: true })
}
