//! `get_job_status`: one job's status (with its recent runs), or every
//! job's.

use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mcp::args::ToolArgs;
use crate::mcp::context::Ctx;

pub const NAME: &str = "get_job_status";
pub const DESCRIPTION: &str =
    "Status of the background jobs (lifecycle, retention, cache_maintenance, analytics_rollup): \
state (idle | running | disabled | failed), config, last and next run, success and failure \
counts, last error and recent runs. Give job_name for one job; unknown names are NOT_FOUND.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// lifecycle | retention | cache_maintenance | analytics_rollup; all when absent.
    pub job_name: Option<String>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    /// The job asked for (with `history`), when job_name was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Value>,
    /// Every job (with `history`), when job_name was not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<Value>>,
    pub timestamp: String,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    let list: Vec<Value> = ctx
        .core
        .job_status(a.job_name.as_deref())?
        .iter()
        .map(|s| view(&ctx, s))
        .collect();
    let (job, jobs) = match a.job_name {
        Some(_) => (list.into_iter().next(), None),
        None => (None, Some(list)),
    };
    Ok(Out {
        success: true,
        job,
        jobs,
        timestamp: handoff_actors::model::rfc3339(&handoff_actors::model::now()),
    })
}

/// A job as `get_job_status` and `handoff://jobs` show it to this caller.
/// A run's `report` counts rows of every tenant (sessions purged, entries by
/// type, ...): the deployment's business, so only a caller with the admin
/// capability sees it; others get `report: null` (docs/security.md).
pub fn view(ctx: &Ctx, s: &handoff_actors::jobs::JobStatus) -> Value {
    let mut v = s.to_json(true);
    if !ctx.caller.admin {
        if let Some(run) = v.get_mut("last_run").and_then(Value::as_object_mut) {
            run.insert("report".into(), Value::Null);
        }
        for run in v
            .get_mut("history")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(run) = run.as_object_mut() {
                run.insert("report".into(), Value::Null);
            }
        }
    }
    v
}
