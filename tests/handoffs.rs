//! The handoff loop: request → list → accept, the agent resources, and the
//! rules (only the target accepts, and only once).

mod common;

use std::sync::Arc;

use common::{DbDir, Server};
use serde_json::{json, Value};

async fn setup(s: &Server, key: &str, target: &str, kind: &str) -> String {
    s.call(
        "register_session",
        json!({"session_key": key, "agent_from": "alice"}),
    )
    .await
    .ok();
    s.call(
        "update_context",
        json!({"session_key": key, "context_type": "message", "content": "state of play"}),
    )
    .await
    .ok();
    let h = s
        .call(
            "request_handoff",
            json!({"session_key": key, "target_agent": target, "request_type": kind,
            "request_data": {"instructions": "take it from here", "priority": "urgent"}}),
        )
        .await;
    h.ok()["handoff"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn request_list_accept_round_trip() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    let first = setup(&s, "s1", "bob", "context_transfer").await;
    let second = setup(&s, "s2", "bob", "full_handoff").await;
    setup(&s, "s3", "carol", "context_transfer").await;

    // Newest first, only bob's, paged.
    let l = s
        .call("list_handoffs", json!({"target_agent": "bob", "limit": 1}))
        .await;
    let body = l.ok();
    assert_eq!(body["handoffs"].as_array().unwrap().len(), 1);
    assert_eq!(body["handoffs"][0]["id"], second);
    assert_eq!(body["has_more"], true);
    let cursor = body["next_cursor"].as_str().unwrap().to_string();
    let l = s
        .call(
            "list_handoffs",
            json!({"targetAgent": "bob", "limit": 1, "cursor": cursor}),
        )
        .await;
    let body = l.ok();
    assert_eq!(body["handoffs"][0]["id"], first);
    assert_eq!(body["has_more"], false);
    let h = &body["handoffs"][0];
    assert_eq!(h["status"], "pending");
    assert_eq!(h["source_agent"], "alice");
    assert_eq!(h["request_data"]["priority"], "urgent");
    assert_eq!(h["context_summary"]["entry_counts"]["message"], 1);

    // Accept: the package carries the summary and the first page.
    let a = s
        .call(
            "accept_handoff",
            json!({"handoff_id": first, "agent": "bob"}),
        )
        .await;
    let body = a.ok();
    assert_eq!(body["handoff"]["status"], "accepted");
    assert_eq!(body["handoff"]["accepted_by"], "bob");
    assert_eq!(body["summary"]["session_key"], "s1");
    let entries = body["context"]["entries"].as_array().unwrap();
    assert_eq!(entries[1]["content"], "state of play");
    assert!(entries.last().unwrap()["content"]
        .as_str()
        .unwrap()
        .contains("accepted by bob"));
    assert_eq!(body["context"]["has_more"], false);
    assert_eq!(
        body["context"]["next_after_sequence"],
        entries.last().unwrap()["sequence_number"]
    );

    // Status filter sees it move.
    let pending = s
        .call(
            "list_handoffs",
            json!({"target_agent": "bob", "status": "pending"}),
        )
        .await;
    let ids: Vec<&Value> = pending.ok()["handoffs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["id"])
        .collect();
    assert_eq!(ids, [&json!(second)]);
    let accepted = s
        .call(
            "list_handoffs",
            json!({"target_agent": "bob", "status": "accepted"}),
        )
        .await;
    assert_eq!(accepted.ok()["handoffs"][0]["id"], first);

    // A full handoff completed its session, and can still be accepted.
    let a = s
        .call(
            "accept_handoff",
            json!({"handoff_id": second, "agent": "bob"}),
        )
        .await;
    let body = a.ok();
    assert!(body["message"].as_str().unwrap().contains("completed"));
    assert_eq!(body["summary"]["status"], "completed");
    assert!(s.close().await.success());
}

#[tokio::test]
async fn accept_errors_change_nothing() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    let id = setup(&s, "s", "bob", "context_transfer").await;
    let before = common::all_entries(&s, "s").await.len();

    s.call(
        "accept_handoff",
        json!({"handoff_id": id, "agent": "mallory"}),
    )
    .await
    .err("FORBIDDEN");
    s.call(
        "accept_handoff",
        json!({"handoff_id": "not-a-uuid", "agent": "bob"}),
    )
    .await
    .err("VALIDATION_ERROR");
    s.call(
        "accept_handoff",
        json!({"handoff_id": uuid_like(), "agent": "bob"}),
    )
    .await
    .err("HANDOFF_NOT_FOUND");
    s.call("accept_handoff", json!({"handoff_id": id}))
        .await
        .err("VALIDATION_ERROR");
    s.call(
        "list_handoffs",
        json!({"target_agent": "bob", "status": "lost"}),
    )
    .await
    .err("VALIDATION_ERROR");
    s.call("list_handoffs", json!({"target_agent": "bob", "limit": 0}))
        .await
        .err("VALIDATION_ERROR");
    assert_eq!(common::all_entries(&s, "s").await.len(), before);
    let l = s
        .call("list_handoffs", json!({"target_agent": "bob"}))
        .await;
    assert_eq!(l.ok()["handoffs"][0]["status"], "pending");

    s.call("accept_handoff", json!({"handoff_id": id, "agent": "bob"}))
        .await
        .ok();
    let again = s
        .call("accept_handoff", json!({"handoff_id": id, "agent": "bob"}))
        .await;
    again.err("VALIDATION_ERROR");
    assert_eq!(common::all_entries(&s, "s").await.len(), before + 1);
    assert!(s.close().await.success());
}

fn uuid_like() -> String {
    "01a21050-45d2-7248-988b-7ae07312c9b9".into()
}

#[tokio::test]
async fn concurrent_accepts_one_wins() {
    let db = DbDir::new();
    let s = Arc::new(Server::start(&db, &[]).await);
    let id = setup(&s, "race", "bob", "context_transfer").await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            let id = id.clone();
            tokio::spawn(async move {
                s.call("accept_handoff", json!({"handoff_id": id, "agent": "bob"}))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.is_error {
            r.err("VALIDATION_ERROR");
        } else {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one accept succeeds");
    let accepted: Vec<Value> = common::all_entries(&s, "race")
        .await
        .into_iter()
        .filter(|e| e["content"].as_str().unwrap().contains("accepted by"))
        .collect();
    assert_eq!(accepted.len(), 1);
}

#[tokio::test]
async fn agent_resources() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    setup(&s, "owned-by-alice", "bob", "collaboration").await;
    setup(&s, "other", "bob", "context_transfer").await;
    s.call(
        "register_session",
        json!({"session_key": "bobs-own", "agent_from": "bob"}),
    )
    .await
    .ok();

    let v = s.read("handoff://agents/bob/sessions").await.unwrap();
    let roles: Vec<(String, String)> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["session_key"].as_str().unwrap().into(),
                x["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("bobs-own".to_string(), "owner".to_string()),
            ("owned-by-alice".to_string(), "collaborator".to_string())
        ],
        "registered or joined, not merely handed to"
    );
    let v = s.read("handoff://agents/bob/handoffs").await.unwrap();
    assert_eq!(v["handoffs"].as_array().unwrap().len(), 2);
    let v = s
        .read("handoff://agents/bob/handoffs?status=accepted")
        .await
        .unwrap();
    assert_eq!(v["handoffs"].as_array().unwrap().len(), 0);
    let v = s.read("handoff://agents/nobody/handoffs").await.unwrap();
    assert_eq!(v["handoffs"], json!([]));
    assert!(s.read("handoff://agents/bob/elsewhere").await.is_err());
    let templates = s.client.list_all_resource_templates().await.unwrap();
    let uris: Vec<String> = templates.iter().map(|t| t.uri_template.clone()).collect();
    assert!(
        uris.contains(&"handoff://agents/{agent_id}/handoffs".to_string()),
        "{uris:?}"
    );
    assert!(
        uris.contains(&"handoff://agents/{agent_id}/sessions".to_string()),
        "{uris:?}"
    );
    assert!(s.close().await.success());
}
