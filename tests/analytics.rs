//! `handoff://analytics/{type}` through the real client: every number is
//! checked against what the test itself created (on SQLite, and on
//! PostgreSQL with `HANDOFF_TEST_BACKEND=postgres`).

mod common;

use std::collections::BTreeMap;

use common::{DbDir, Server};
use serde_json::{json, Value};

async fn populate(s: &Server) {
    for (key, agent) in [("a1", "alice"), ("a2", "alice"), ("b1", "bob")] {
        s.call(
            "register_session",
            json!({"session_key": key, "agent_from": agent}),
        )
        .await
        .ok();
    }
    for (key, ty, content) in [
        ("a1", "message", "hello"),
        ("a1", "message", "wörld \u{0} nul"),
        ("a2", "file", "fn main() {}"),
        ("a2", "tool_call", "cargo test"),
        ("b1", "message", "😀"),
    ] {
        s.call(
            "update_context",
            json!({"session_key": key, "context_type": ty, "content": content}),
        )
        .await
        .ok();
    }
    for (key, target, ty) in [
        ("a1", "carol", "context_transfer"),
        ("a2", "carol", "collaboration"),
        ("b1", "dave", "full_handoff"),
    ] {
        s.call(
            "request_handoff",
            json!({"session_key": key, "target_agent": target, "request_type": ty}),
        )
        .await
        .ok();
    }
    let pending = s
        .call("list_handoffs", json!({"target_agent": "carol"}))
        .await
        .ok()
        .clone();
    let a1 = pending["handoffs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["session_key"] == "a1")
        .unwrap()["id"]
        .clone();
    s.call(
        "accept_handoff",
        json!({"handoff_id": a1, "agent": "carol"}),
    )
    .await
    .ok();
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[tokio::test]
async fn data_analytics_count_what_was_created() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    populate(&s).await;

    // What the sessions hold, read back through the tools.
    let mut entries = 0usize;
    let mut by_type: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for key in ["a1", "a2", "b1"] {
        for e in common::all_entries(&s, key).await {
            entries += 1;
            let t = by_type
                .entry(e["context_type"].as_str().unwrap().to_string())
                .or_default();
            t.0 += 1;
            t.1 += e["content"].as_str().unwrap().len() as i64;
        }
    }
    // Registrations, handoffs and acceptances each append a system entry.
    assert_eq!(entries, 3 + 5 + 3 + 1);

    let a = s.read("handoff://analytics/sessions").await.unwrap();
    assert_eq!(a["type"], "sessions");
    assert_eq!(a["total"], 3);
    assert_eq!(a["by_status"], json!({"active": 2, "completed": 1}));
    assert_eq!(a["created_per_day"], json!([{"day": today(), "count": 3}]));
    assert_eq!(a["total_entries"], entries);
    assert!((a["average_entries_per_session"].as_f64().unwrap() - 12.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        a["top_agents"],
        json!([{"agent": "alice", "sessions": 2}, {"agent": "bob", "sessions": 1}])
    );

    let h = s.read("handoff://analytics/handoffs").await.unwrap();
    assert_eq!(h["total"], 3);
    assert_eq!(h["by_status"], json!({"accepted": 1, "pending": 2}));
    assert_eq!(
        h["by_request_type"],
        json!({"collaboration": 1, "context_transfer": 1, "full_handoff": 1})
    );
    assert_eq!(
        h["by_target_agent"],
        json!([{"agent": "carol", "handoffs": 2}, {"agent": "dave", "handoffs": 1}])
    );
    let lat = &h["accept_latency_ms"];
    assert_eq!(lat["count"], 1);
    let median = lat["median"].as_f64().unwrap();
    assert!((0.0..60_000.0).contains(&median), "{lat}");
    assert_eq!(lat["p95"], lat["median"]);

    let c = s.read("handoff://analytics/context").await.unwrap();
    let total_bytes: i64 = by_type.values().map(|t| t.1).sum();
    assert_eq!(c["total_entries"], entries);
    assert_eq!(c["total_content_bytes"], total_bytes);
    let want: serde_json::Map<String, Value> = by_type
        .iter()
        .map(|(k, (n, b))| (k.clone(), json!({"entries": n, "content_bytes": b})))
        .collect();
    assert_eq!(c["by_context_type"], Value::Object(want));
    assert_eq!(c["by_context_type"]["message"]["entries"], 3);
    assert_eq!(c["by_context_type"]["system"]["entries"], 7);
    assert_eq!(
        c["by_context_type"]["message"]["content_bytes"],
        "hello".len() + "wörld \u{0} nul".len() + "😀".len()
    );
    assert_eq!(
        c["entries_per_day"],
        json!([{"day": today(), "count": entries}])
    );
    assert!(
        (c["average_content_bytes"].as_f64().unwrap() - total_bytes as f64 / entries as f64).abs()
            < 1e-9
    );
    assert!(s.close().await.success());
}

#[tokio::test]
async fn performance_and_resources() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    populate(&s).await;
    let r = s.read("handoff://analytics/resources").await.unwrap();
    assert_eq!(r["live_session_actors"], 3, "{r}");
    // Two failures of one kind.
    for _ in 0..2 {
        s.call(
            "update_context",
            json!({"session_key": "nope", "context_type": "message", "content": "x"}),
        )
        .await
        .err("SESSION_NOT_FOUND");
    }

    let p = s.read("handoff://analytics/performance").await.unwrap();
    let u = &p["tools"]["update_context"];
    assert_eq!(u["calls"], 7, "{p}");
    assert_eq!(u["errors"], 2);
    assert_eq!(u["errors_by_code"], json!({"SESSION_NOT_FOUND": 2}));
    assert_eq!(u["latency_ms"]["count"], 7);
    let (p50, p95) = (
        u["latency_ms"]["p50"].as_f64().unwrap(),
        u["latency_ms"]["p95"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p95, "{u}");
    assert_eq!(p["tools"]["register_session"]["calls"], 3);
    assert_eq!(p["tools"]["register_session"]["errors"], 0);
    assert_eq!(p["tools"]["accept_handoff"]["calls"], 1);
    let units = &p["persistence"]["batch_size"]["units"];
    assert!(units["count"].as_u64().unwrap() >= 1, "{p}");
    assert!(units["mean"].as_f64().unwrap() >= 1.0, "{p}");
    let ok_commits = &p["persistence"]["commit_latency_ms"]["ok"];
    assert!(ok_commits["count"].as_u64().unwrap() >= 1, "{p}");
    assert!(ok_commits["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(p["breakers"]["database"], "closed");

    let r = s.read("handoff://analytics/resources").await.unwrap();
    assert_eq!(r["type"], "resources");
    let rss = r["rss_bytes"].as_u64().unwrap();
    assert!(rss > (1 << 20) && rss < (4 << 30), "{r}");
    assert!(r["database"]["size_bytes"].as_i64().unwrap() > 0, "{r}");
    assert!(r["uptime_seconds"].as_f64().unwrap() > 0.0);
    if !common::postgres_backend() {
        let file = db.path().join("handoff.db");
        let on_disk = std::fs::metadata(&file).unwrap().len() as i64;
        // Files are named by role: their paths never reach a client.
        assert_eq!(r["database"]["files"]["main"], on_disk, "{r}");
        assert!(!r.to_string().contains(&file.display().to_string()), "{r}");
    }
    assert!(s.close().await.success());
}

#[tokio::test]
async fn unknown_types_are_not_found_and_templates_list_analytics() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    for uri in [
        "handoff://analytics/nope",
        "handoff://analytics/",
        "handoff://analytics/sessions/x",
    ] {
        match s.read(uri).await {
            Err(rmcp::ServiceError::McpError(e)) => {
                let data = e.data.expect("error data");
                assert_eq!(data["error_code"], "NOT_FOUND", "{uri}: {data}");
            }
            other => panic!("{uri}: expected NOT_FOUND, got {other:?}"),
        }
    }
    let templates = s.client.list_all_resource_templates().await.unwrap();
    assert!(templates
        .iter()
        .any(|t| t.uri_template == "handoff://analytics/{type}"));
    // An empty tenant: zeros, not errors.
    let a = s.read("handoff://analytics/sessions").await.unwrap();
    assert_eq!(
        (
            a["total"].clone(),
            a["by_status"].clone(),
            a["average_entries_per_session"].clone()
        ),
        (json!(0), json!({}), json!(0.0))
    );
    let h = s.read("handoff://analytics/handoffs").await.unwrap();
    assert_eq!(h["accept_latency_ms"]["median"], Value::Null);
    assert!(s.close().await.success());
}
