//! `debug_panic_job` (only with HANDOFF_TEST_HOOKS=true): the job's next
//! run panics, to show that its supervisor restarts it and the failure is
//! recorded; or, with `fail_attempts`, its next attempts fail (retries).

use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::args::ToolArgs;
use crate::mcp::context::Ctx;

pub const NAME: &str = "debug_panic_job";
pub const DESCRIPTION: &str =
    "Test hook: make the job's next run panic, or its next fail_attempts attempts fail.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub job_name: String,
    /// Fail this many attempts instead of panicking.
    pub fail_attempts: Option<u32>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    ctx.core.job_status(Some(&a.job_name))?;
    match a.fail_attempts {
        Some(n) => ctx.core.jobs.fail_next_attempts(&a.job_name, n),
        None => ctx.core.jobs.panic_next_run(&a.job_name),
    }
    Ok(Out { success: true })
}
