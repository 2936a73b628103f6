//! `lifecycle`: active → dormant → expired → archived → purged (contract
//! §5), each step after its `retention` threshold without activity, read
//! from the live settings on every run. Completed sessions are archived
//! like expired ones. Every move goes through the session's actor, which
//! writes the row, the lifecycle event and the audit row.

use async_trait::async_trait;
use handoff_actors::jobs::JobWork;
use handoff_actors::model::{LifecycleTarget, SessionStatus};
use serde_json::{json, Map, Value};

use super::{human, step, JobDeps};

pub struct Lifecycle(pub JobDeps);

#[async_trait]
impl JobWork for Lifecycle {
    async fn run(&self, _job: &str) -> Result<Value, String> {
        let r = self.0.cfg.live.settings().retention;
        let steps: [(&[&str], LifecycleTarget, _, &str); 4] = [
            (
                &["active"],
                LifecycleTarget::Status(SessionStatus::Dormant),
                r.dormant_after,
                "dormant_after",
            ),
            (
                &["dormant"],
                LifecycleTarget::Status(SessionStatus::Expired),
                r.expire_after,
                "expire_after",
            ),
            (
                &["expired", "completed"],
                LifecycleTarget::Status(SessionStatus::Archived),
                r.archive_after,
                "archive_after",
            ),
            (
                &["archived"],
                LifecycleTarget::Purged,
                r.purge_after,
                "purge_after",
            ),
        ];
        let mut report = Map::new();
        let mut skipped = 0;
        let mut errors = Vec::new();
        // In order, so a long-idle session moves through every step it is
        // due in one run, each recorded.
        for (from, to, after, key) in steps {
            let reason = format!("no activity for {} (retention.{key})", human(after));
            let n = step(&self.0, from, to, after, reason).await?;
            report.insert(to.as_str().into(), json!(n.moved));
            skipped += n.skipped;
            errors.extend(n.errors);
        }
        report.insert("skipped".into(), json!(skipped));
        if !errors.is_empty() {
            return Err(format!(
                "{} transition(s) failed: {}",
                errors.len(),
                errors.first().cloned().unwrap_or_default()
            ));
        }
        Ok(Value::Object(report))
    }
}
