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
