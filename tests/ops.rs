//! ops/ is tested, not decoration: every metric the Grafana dashboard and
//! the alert rules name is one a live daemon exports (after a little load),
//! and promtool accepts and unit-tests the rules.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::daemon::{create_key, post, Daemon, McpHttp};
use common::DbDir;
use serde_json::{json, Value};

fn ops(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ops").join(file))
        .unwrap_or_else(|e| panic!("ops/{file}: {e}"))
}

/// The `handoff_*` names in PromQL text.
fn names(promql: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bhandoff_[a-z0-9_]+\b").unwrap();
    re.find_iter(promql)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Every sample name in a text exposition.
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let db = DbDir::new();
    let d = Daemon::start_env(&db, &[], &[]).await;
    let key = create_key(&db, "ops", "agent", &[]);
    let mut c = McpHttp::open(&d.mcp, Some(&key)).await;
    c.call(
        "register_session",
        json!({"session_key": "s", "agent_from": "a"}),
    )
    .await;
    for i in 0..5 {
        c.call(
            "update_context",
            json!({"session_key": "s", "context_type": "message", "content": format!("m{i}")}),
        )
        .await;
    }
    c.call(
        "request_handoff",
        json!({"session_key": "s", "target_agent": "b"}),
    )
    .await;
    let (status, _, _) = post(
        &d.mcp,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    let scrape = reqwest::get(format!("http://{}/metrics", d.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let have = exported(&scrape);

    let dash: Value = serde_json::from_str(&ops("grafana/handoff.json")).unwrap();
    let mut queries = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            queries.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(queries.len() >= 20, "{}", queries.len());
    let alerts: String = ops("prometheus/alerts.yml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    queries.push(("alerts.yml".into(), alerts));
    let mut missing = Vec::new();
    let mut named = BTreeSet::new();
    for (title, q) in &queries {
        let found = names(q);
        assert!(
            !found.is_empty() || title == "alerts.yml",
            "{title}: no handoff metric in {q}"
        );
        for n in found {
            if !have.contains(&n) {
                missing.push(format!("{title}: {n}"));
            }
            named.insert(n);
        }
    }
    assert!(missing.is_empty(), "named but not exported: {missing:#?}");
    assert!(named.len() >= 20, "{named:?}");
    assert!(d.stop().await.success());
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
        vec!["check", "config", "scrape.yml"],
    ] {
        let (ok, said) = common::promtool(&args, Some(&dir), None);
        assert!(ok, "promtool {args:?}: {said}");
    }
}
