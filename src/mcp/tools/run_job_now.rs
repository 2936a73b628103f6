//! `run_job_now`: run a job at once, wait for it, and return the run. A
//! failed or panicked run is still a successful call: `run.outcome` says
//! how the job fared.

use handoff_actors::jobs::RunRecord;
use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mcp::args::ToolArgs;
use crate::mcp::context::Ctx;

pub const NAME: &str = "run_job_now";
pub const DESCRIPTION: &str =
    "Run a background job now (also when disabled), wait for it and return the run: outcome \
(success | failure | panic), attempts, report (counts) or error, and the job's status after it. \
A run already in progress finishes first. Unknown job_name: NOT_FOUND.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// lifecycle | retention | cache_maintenance | analytics_rollup.
    pub job_name: String,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub job_name: String,
    /// The run: {run, trigger, started_at, finished_at, duration_ms,
    /// outcome, attempts, report, error}.
    #[schemars(with = "Value")]
    pub run: RunRecord,
    /// The job's status after the run.
    pub job: Value,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    ctx.require_admin(NAME)?;
    let run = ctx.core.run_job(&a.job_name).await?;
    let job = ctx
        .core
        .job_status(Some(&a.job_name))?
        .first()
        .map(|s| s.to_json(false))
        .unwrap_or_default();
    Ok(Out {
        success: true,
        job_name: a.job_name,
        run,
        job,
    })
}
