mod common;

use common::{DbDir, Server};
use serde_json::json;

#[tokio::test]
async fn register_append_read() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    s.call(
        "register_session",
        json!({"session_key": "k", "agent_from": "a"}),
    )
    .await
    .ok();
    s.call(
        "update_context",
        json!({"session_key": "k", "context_type": "message", "content": "hi"}),
    )
    .await
    .ok();
    let entries = common::all_entries(&s, "k").await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["content"], "hi");
    assert!(s.close().await.success());
}

/// Every runtime shape serves the same calls: one thread (`1`), the default
/// (`0`, a worker per core) and an explicit worker count.
#[tokio::test]
async fn every_runtime_shape_serves_and_shuts_down() {
    for threads in ["1", "0", "3"] {
        let db = DbDir::new();
        let s = Server::start(&db, &[("HANDOFF_RUNTIME_THREADS", threads)]).await;
        s.call(
            "register_session",
            json!({"session_key": "k", "agent_from": "a"}),
        )
        .await
        .ok();
        for i in 0..20 {
            s.call(
                "update_context",
                json!({"session_key": "k", "context_type": "message", "content": format!("m{i}")}),
            )
            .await
            .ok();
        }
        let h = s
            .call(
                "request_handoff",
                json!({"session_key": "k", "target_agent": "b"}),
            )
            .await;
        assert_eq!(h.ok()["success"], true, "threads={threads}");
        let entries = common::all_entries(&s, "k").await;
        // The registration, 20 messages and the handoff's own entry.
        assert_eq!(entries.len(), 22, "threads={threads}");
        assert_eq!(entries[20]["content"], "m19", "threads={threads}");
        assert!(s.close().await.success(), "threads={threads}");
    }
}
