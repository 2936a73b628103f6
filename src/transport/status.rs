//! `/status` on the operators' listener: the supervision tree at a glance
//! (each actor group's health, live count, mailbox backlog and restarts),
//! the breakers, the database and the cache, and whether this replica is
//! ready. `handoff status` prints it (`crate::cli::status`).

use serde_json::{json, Value};

/// Ready when the database answers and its breaker is not open.
pub fn ready(report: &Value) -> bool {
    let breaker_open = components(report)
        .any(|c| c["name"] == "breaker.database" && c["details"]["state"] == "open");
    report["status"] != "error" && !breaker_open
}

fn components(report: &Value) -> impl Iterator<Item = &Value> {
    report["components"].as_array().into_iter().flatten()
}

/// A live gauge's value for `kind`, 0 when it has never been set.
fn gauge(v: &prometheus::IntGaugeVec, kind: &str) -> i64 {
    v.get_metric_with_label_values(&[kind])
        .map(|g| g.get())
        .unwrap_or(0)
}

/// The status document, from the health report and the actor metrics.
pub fn view(report: &Value) -> Value {
    let m = handoff_actors::metrics::metrics();
    let mut actors = Vec::new();
    let mut breakers = Vec::new();
    let mut dependencies = Vec::new();
    for c in components(report) {
        let name = c["name"].as_str().unwrap_or_default();
        let d = &c["details"];
        if let Some(group) = name.strip_prefix("actor.") {
            // A supervisor's children count under their own kind.
            let children = match group {
                "sessions" => Some("session"),
                "jobs" => Some("job"),
                _ => None,
            };
            actors.push(json!({
                "group": group,
                "status": c["status"],
                "alive": d["alive"],
                "live": gauge(&m.actors_live, group),
                "children": children.map(|k| json!({"kind": k, "live": gauge(&m.actors_live, k)})),
                "backlog": gauge(&m.mailbox_backlog, group),
                "restarts": d["restarts"],
            }));
        } else if let Some(dep) = name.strip_prefix("breaker.") {
            breakers.push(json!({"dependency": dep, "status": c["status"], "state": d["state"]}));
        } else {
            dependencies.push(json!({"name": name, "status": c["status"], "details": d}));
        }
    }
    json!({
        "ready": ready(report),
        "status": report["status"],
        "actors": actors,
        "breakers": breakers,
        "dependencies": dependencies,
        "timestamp": report["timestamp"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_breakers_and_dependencies_are_sorted_out() {
        let report = json!({"status": "ok", "components": [
            {"name": "database", "status": "ok", "details": {"backend": "sqlite"}},
            {"name": "breaker.database", "status": "ok", "details": {"state": "closed"}},
            {"name": "actor.sessions", "status": "ok", "details": {"alive": true, "restarts": 2}},
        ]});
        let v = view(&report);
        assert_eq!(v["ready"], true);
        assert_eq!(v["actors"][0]["group"], "sessions");
        assert_eq!(v["actors"][0]["restarts"], 2);
        assert_eq!(v["actors"][0]["children"]["kind"], "session");
        assert_eq!(v["breakers"][0]["state"], "closed");
        assert_eq!(v["dependencies"][0]["name"], "database");
        let open = json!({"status": "degraded", "components": [
            {"name": "breaker.database", "status": "error", "details": {"state": "open"}}]});
        assert!(!ready(&open));
        assert!(!ready(&json!({"status": "error", "components": []})));
    }
}
