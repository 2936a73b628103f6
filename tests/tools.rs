//! Every tool and resource that exists today, through the real MCP client:
//! each success shape, each error code it can produce, and the rule that a
//! failed call changes nothing (CONTRACT.md §1–§4).

mod common;

use common::{DbDir, Server, ToolOut};
use rmcp::model::ErrorData;
use serde_json::{json, Value};

const MIB: usize = 1024 * 1024;

// ---- helpers ----------------------------------------------------------------

async fn start(env: &[(&str, &str)]) -> (DbDir, Server) {
    let db = DbDir::new();
    let s = Server::start(&db, env).await;
    (db, s)
}

async fn register(s: &Server, key: &str, agent: &str) -> Value {
    s.call(
        "register_session",
        json!({"session_key": key, "agent_from": agent}),
    )
    .await
    .ok()
    .clone()
}

async fn append(s: &Server, key: &str, content: &str) -> Value {
    s.call(
        "update_context",
        json!({"session_key": key, "context_type": "message", "content": content}),
    )
    .await
    .ok()
    .clone()
}

/// Asserts the session holds exactly the entries 1..=n, gap-free and in order.
async fn assert_seqs(s: &Server, key: &str, n: i64) -> Vec<Value> {
    let entries = common::all_entries(s, key).await;
    let seqs: Vec<i64> = entries
        .iter()
        .map(|e| e["sequence_number"].as_i64().expect("sequence_number"))
        .collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "entries of {key}");
    entries
}

fn is_uuid(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok() && s.len() == 36)
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        chrono::DateTime::parse_from_rfc3339(s).is_ok_and(|t| t.offset().local_minus_utc() == 0)
    })
}

/// The protocol error behind a failed request.
fn mcp_error(e: rmcp::ServiceError) -> ErrorData {
    match e {
        rmcp::ServiceError::McpError(d) => d,
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

/// The contract's error fields in a protocol error's `data`.
fn assert_error_data(d: &ErrorData, code: &str) {
    let data = d.data.as_ref().expect("error data");
    assert_eq!(data["error_code"], code, "{data}");
    assert_eq!(data["success"], false, "{data}");
    assert!(is_uuid(&data["request_id"]), "{data}");
    assert!(data["error"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(data["details"].is_object(), "{data}");
}

fn nested(depth: usize) -> Value {
    let mut v = json!({"leaf": 1});
    for _ in 1..depth {
        v = json!({ "n": v });
    }
    v
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

// ---- tools/list ---------------------------------------------------------------

const TOOLS: [&str; 15] = [
    "register_session",
    "update_context",
    "request_handoff",
    "get_context",
    "delete_session",
    "list_handoffs",
    "accept_handoff",
    "search_context",
    "analyze_codebase",
    "get_configuration",
    "update_configuration",
    "manage_configuration_backup",
    "get_job_status",
    "run_job_now",
    "update_job_config",
];

#[tokio::test]
async fn tools_list_has_schemas_and_hides_test_hook() {
    let (_db, s) = start(&[]).await;
    let tools = s.client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    let mut want = TOOLS.to_vec();
    want.sort_unstable();
    assert_eq!(names, want, "tools/list");
    assert!(
        !names.contains(&"debug_crash_session"),
        "test hook listed without HANDOFF_TEST_HOOKS: {names:?}"
    );
    for t in &tools {
        assert_eq!(
            t.input_schema.get("type").and_then(Value::as_str),
            Some("object"),
            "{} inputSchema",
            t.name
        );
        assert!(
            t.input_schema
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| !p.is_empty()),
            "{} inputSchema has no properties",
            t.name
        );
        let out = t
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no outputSchema", t.name));
        assert!(
            out.get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.contains_key("success")),
            "{} outputSchema lacks success",
            t.name
        );
        assert!(t.description.as_ref().is_some_and(|d| !d.is_empty()));
    }
    // Calling the hidden hook is an unknown tool, not a crash.
    let e = mcp_error(
        s.try_call("debug_crash_session", json!({"session_key": "k"}))
            .await
            .expect_err("hidden hook must not be callable"),
    );
    assert_error_data(&e, "NOT_FOUND");
    assert!(s.close().await.success());
}

#[tokio::test]
async fn debug_crash_session_with_test_hooks() {
    let (_db, s) = start(&[("HANDOFF_TEST_HOOKS", "true")]).await;
    let tools = s.client.list_all_tools().await.expect("tools/list");
    let hook = tools
        .iter()
        .find(|t| t.name == "debug_crash_session")
        .expect("debug_crash_session listed with HANDOFF_TEST_HOOKS=true");
    assert!(hook.output_schema.is_some());
    register(&s, "k", "a").await;
    append(&s, "k", "before").await;
    let r = s
        .call("debug_crash_session", json!({"session_key": "k"}))
        .await;
    r.err("INTERNAL_ERROR");
    // Supervision contains the crash: the server answers, the session's
    // acknowledged entries are intact and it takes further writes in order.
    let after = append(&s, "k", "after").await;
    assert_eq!(after["context_entry"]["sequence_number"], 3);
    let entries = assert_seqs(&s, "k", 3).await;
    assert_eq!(entries[1]["content"], "before");
    assert_eq!(entries[2]["content"], "after");
    // The hook always fails with INTERNAL_ERROR (its description says so),
    // also on a key that has no session, and creates nothing there.
    s.call("debug_crash_session", json!({"session_key": "missing"}))
        .await
        .err("INTERNAL_ERROR");
    s.call("get_context", json!({"session_key": "missing"}))
        .await
        .err("SESSION_NOT_FOUND");
    assert_seqs(&s, "k", 3).await;
    assert!(s.close().await.success());
}

#[tokio::test]
async fn debug_crash_session_validates_session_key() {
    let (_db, s) = start(&[("HANDOFF_TEST_HOOKS", "true")]).await;
    for bad in [String::new(), "k".repeat(256), "a\u{7}b".to_string()] {
        let r = s
            .call("debug_crash_session", json!({"session_key": bad}))
            .await;
        let e = r.err("VALIDATION_ERROR");
        assert_eq!(e["details"]["field"], "session_key", "{e}");
    }
    assert!(s.close().await.success());
}

// ---- published schemas against real traffic ----------------------------------

/// Every tool, called so that it succeeds and so that it fails, with each
/// result checked against the tool's published outputSchema by a real JSON
/// Schema validator (and each successful call's arguments against its
/// inputSchema). A tool added to tools/list without a case here fails the
/// test.
#[tokio::test]
async fn every_tool_result_matches_its_published_schemas() {
    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ws.path().join("src")).unwrap();
    std::fs::write(ws.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    let root = ws.path().to_str().unwrap().to_string();
    let (_db, s) = start(&[("HANDOFF_WORKSPACE_ROOT", root.as_str())]).await;
    let schemas = common::tool_schemas(&s).await;
    let mut succeeded = std::collections::BTreeSet::new();
    let mut failed = std::collections::BTreeSet::new();

    // Checks one call against the schemas; returns the body.
    async fn check(
        s: &Server,
        schemas: &std::collections::HashMap<String, (Value, Value)>,
        tool: &str,
        args: Value,
        want_error: Option<&str>,
    ) -> Value {
        let (input, output) = schemas
            .get(tool)
            .unwrap_or_else(|| panic!("{tool} is not in tools/list"));
        if want_error.is_none() {
            let p = common::schema_problems(input, &args);
            assert!(
                p.is_empty(),
                "{tool} arguments {args} vs inputSchema: {p:?}"
            );
        }
        let out = s.call(tool, args.clone()).await;
        match want_error {
            None => {
                out.ok();
            }
            Some(code) => {
                out.err(code);
            }
        }
        let p = common::schema_problems(output, &out.body);
        assert!(
            p.is_empty(),
            "{tool} {} vs outputSchema: {p:?}\n{}",
            if out.is_error { "error" } else { "success" },
            out.body
        );
        out.body
    }

    let successes: Vec<(&str, Value)> = vec![
        (
            "register_session",
            json!({"session_key": "k", "agent_from": "a", "metadata": {"x": 1}}),
        ),
        (
            "register_session",
            json!({"session_key": "k2", "agent_from": "a"}),
        ),
        (
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": "c"}),
        ),
        (
            "update_context",
            json!({"session_key": "k", "entries": [{"context_type": "file", "content": "f", "metadata": {"p": 1}}]}),
        ),
        ("get_context", json!({"session_key": "k", "limit": 2})),
        (
            "get_context",
            json!({"session_key": "k", "after_sequence": 1, "context_types": ["file"]}),
        ),
        ("search_context", json!({"query": "c", "limit": 5})),
        (
            "analyze_codebase",
            json!({"session_key": "k", "file_paths": ["src/lib.rs"]}),
        ),
        (
            "request_handoff",
            json!({"session_key": "k", "target_agent": "b", "request_type": "collaboration", "request_data": {"instructions": "i", "priority": "high", "extra": [1]}}),
        ),
        (
            "list_handoffs",
            json!({"target_agent": "b", "status": "pending"}),
        ),
        ("get_configuration", json!({})),
        (
            "get_configuration",
            json!({"config_section": "retention", "include_metadata": true}),
        ),
        (
            "update_configuration",
            json!({"config_section": "retention", "retention_policy": {"dormant_after": "2d"}, "validate_only": true}),
        ),
        (
            "update_configuration",
            json!({"config_section": "retention", "retention_policy": {"dormant_after": "2d"}, "updated_by": "t"}),
        ),
        (
            "manage_configuration_backup",
            json!({"action": "create", "backup_name": "b1", "description": "d"}),
        ),
        ("manage_configuration_backup", json!({"action": "list"})),
        ("get_job_status", json!({})),
        ("get_job_status", json!({"job_name": "lifecycle"})),
        (
            "update_job_config",
            json!({"job_name": "lifecycle", "config": {"enabled": true}}),
        ),
        ("run_job_now", json!({"job_name": "lifecycle"})),
        (
            "delete_session",
            json!({"session_key": "k2", "requested_by": "a"}),
        ),
    ];
    let mut handoff_id = String::new();
    let mut backup_id = String::new();
    for (tool, args) in successes {
        let body = check(&s, &schemas, tool, args, None).await;
        match tool {
            "request_handoff" => handoff_id = body["handoff"]["id"].as_str().unwrap().into(),
            "manage_configuration_backup" if body["backup"]["id"].is_string() => {
                backup_id = body["backup"]["id"].as_str().unwrap().into()
            }
            _ => {}
        }
        succeeded.insert(tool.to_string());
    }
    // The calls that need an id from above.
    for (tool, args) in [
        (
            "accept_handoff",
            json!({"handoff_id": handoff_id, "agent": "b"}),
        ),
        (
            "manage_configuration_backup",
            json!({"action": "restore", "backup_id": backup_id}),
        ),
        (
            "manage_configuration_backup",
            json!({"action": "delete", "backup_id": backup_id}),
        ),
        (
            "request_handoff",
            json!({"session_key": "k", "target_agent": "c", "request_type": "full_handoff"}),
        ),
    ] {
        check(&s, &schemas, tool, args, None).await;
        succeeded.insert(tool.to_string());
    }

    let errors: Vec<(&str, Value, &str)> = vec![
        (
            "register_session",
            json!({"session_key": "k3"}),
            "VALIDATION_ERROR",
        ),
        (
            "update_context",
            json!({"session_key": "missing", "context_type": "message", "content": "c"}),
            "SESSION_NOT_FOUND",
        ),
        (
            "get_context",
            json!({"session_key": "missing"}),
            "SESSION_NOT_FOUND",
        ),
        ("search_context", json!({"query": ""}), "VALIDATION_ERROR"),
        (
            "analyze_codebase",
            json!({"session_key": "missing", "file_paths": ["src/lib.rs"]}),
            "SESSION_NOT_FOUND",
        ),
        (
            "request_handoff",
            json!({"session_key": "missing", "target_agent": "b"}),
            "SESSION_NOT_FOUND",
        ),
        (
            "list_handoffs",
            json!({"target_agent": ""}),
            "VALIDATION_ERROR",
        ),
        (
            "accept_handoff",
            json!({"handoff_id": uuid::Uuid::new_v4().to_string(), "agent": "b"}),
            "HANDOFF_NOT_FOUND",
        ),
        (
            "get_configuration",
            json!({"config_section": "nope"}),
            "VALIDATION_ERROR",
        ),
        (
            "update_configuration",
            json!({"config_section": "retention", "retention_policy": {"dormant_after": "1ns"}}),
            "VALIDATION_ERROR",
        ),
        (
            "manage_configuration_backup",
            json!({"action": "restore"}),
            "VALIDATION_ERROR",
        ),
        ("get_job_status", json!({"job_name": "nope"}), "NOT_FOUND"),
        (
            "update_job_config",
            json!({"job_name": "lifecycle", "config": {"interval": "banana"}}),
            "VALIDATION_ERROR",
        ),
        ("run_job_now", json!({"job_name": "nope"}), "NOT_FOUND"),
        (
            "delete_session",
            json!({"session_key": "missing"}),
            "SESSION_NOT_FOUND",
        ),
    ];
    for (tool, args, code) in errors {
        check(&s, &schemas, tool, args, Some(code)).await;
        failed.insert(tool.to_string());
    }

    let listed: std::collections::BTreeSet<String> = schemas.keys().cloned().collect();
    assert_eq!(listed.len(), 15, "tools/list: {listed:?}");
    assert_eq!(succeeded, listed, "tools without a successful case");
    assert_eq!(failed, listed, "tools without an error case");
    assert!(s.close().await.success());
}

#[tokio::test]
#[ignore = "documented choice (docs/decisions.md): input schemas publish the canonical snake_case names and their required lists; camelCase spellings are accepted by the server, not described by the schema"]
async fn camel_case_arguments_match_the_published_schemas() {
    let (_db, s) = start(&[]).await;
    let schemas = common::tool_schemas(&s).await;
    let camel = [
        (
            "register_session",
            json!({"sessionKey": "k", "agentFrom": "a"}),
        ),
        (
            "update_context",
            json!({"sessionKey": "k", "contextType": "message", "content": "c"}),
        ),
        (
            "get_context",
            json!({"sessionKey": "k", "afterSequence": 0, "contextTypes": ["file"]}),
        ),
        (
            "request_handoff",
            json!({"sessionKey": "k", "targetAgent": "b", "requestType": "collaboration", "requestData": {}}),
        ),
    ];
    for (tool, args) in camel {
        let (input, _) = &schemas[tool];
        let p = common::schema_problems(input, &args);
        assert!(p.is_empty(), "{tool}: {p:?}");
        // The server itself takes them (checked in camel_case_arguments_accepted).
    }
    assert!(s.close().await.success());
}

// ---- register_session -----------------------------------------------------------

#[tokio::test]
async fn register_session_success_shape() {
    let (_db, s) = start(&[]).await;
    let r = s
        .call(
            "register_session",
            json!({"session_key": "proj-1", "agent_from": "claude", "metadata": {"repo": "x", "n": 2}}),
        )
        .await;
    let b = r.ok();
    assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(b["reactivated"], false);
    let sess = &b["session"];
    assert!(is_uuid(&sess["id"]), "{sess}");
    assert_eq!(sess["session_key"], "proj-1");
    assert_eq!(sess["agent_from"], "claude");
    assert_eq!(sess["status"], "active");
    assert!(is_rfc3339_utc(&sess["created_at"]), "{sess}");
    assert_eq!(sess["metadata"], json!({"repo": "x", "n": 2}));
    // The registration is recorded as a system entry at sequence 1.
    let entries = assert_seqs(&s, "proj-1", 1).await;
    assert_eq!(entries[0]["context_type"], "system");
    assert!(entries[0]["content"].as_str().unwrap().contains("claude"));
    assert!(s.close().await.success());
}

#[tokio::test]
async fn register_existing_active_session_is_refused_and_changes_nothing() {
    let (_db, s) = start(&[]).await;
    let first = s
        .call(
            "register_session",
            json!({"session_key": "k", "agent_from": "a", "metadata": {"v": 1}}),
        )
        .await
        .ok()
        .clone();
    let r = s
        .call(
            "register_session",
            json!({"session_key": "k", "agent_from": "b", "metadata": {"v": 2}}),
        )
        .await;
    let e = r.err("SESSION_EXISTS");
    assert_eq!(e["retryable"], false);
    let existing = &e["details"]["existing_session"];
    assert_eq!(existing["session_key"], "k");
    assert_eq!(existing["status"], "active");
    assert_eq!(existing["agent_from"], "a");
    assert_eq!(existing["id"], first["session"]["id"]);
    // Nothing changed: one entry, same owner, same metadata.
    assert_seqs(&s, "k", 1).await;
    let summary = s.read("handoff://summary/k").await.expect("summary");
    assert_eq!(summary["participants"], json!(["a"]));
    let sessions = s.read("handoff://sessions").await.expect("sessions");
    assert_eq!(sessions["total"], 1);
    assert_eq!(sessions["sessions"][0]["agent_from"], "a");
    assert!(s.close().await.success());
}

// ---- update_context -------------------------------------------------------------

#[tokio::test]
async fn update_context_single_success_shape() {
    let (_db, s) = start(&[]).await;
    let reg = register(&s, "k", "a").await;
    let content = "héllo wörld"; // 13 bytes, 11 chars
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "tool_call", "content": content, "metadata": {"tool": "grep"}}),
        )
        .await;
    let b = r.ok();
    assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(b.get("context_entries").is_none(), "{b}");
    let e = &b["context_entry"];
    assert!(is_uuid(&e["id"]), "{e}");
    assert_eq!(e["sequence_number"], 2);
    assert_eq!(e["context_type"], "tool_call");
    assert_eq!(e["content_length"], content.len());
    assert!(is_rfc3339_utc(&e["created_at"]), "{e}");
    assert_eq!(b["session"]["id"], reg["session"]["id"]);
    assert_eq!(b["session"]["session_key"], "k");
    assert_eq!(b["session"]["status"], "active");
    for t in ["message", "file", "system"] {
        s.call(
            "update_context",
            json!({"session_key": "k", "context_type": t, "content": t}),
        )
        .await
        .ok();
    }
    let entries = assert_seqs(&s, "k", 5).await;
    assert_eq!(entries[1]["content"], content);
    assert_eq!(entries[1]["metadata"], json!({"tool": "grep"}));
    assert_eq!(entries[1]["id"], e["id"]);
    assert!(is_rfc3339_utc(&entries[1]["created_at"]));
    let types: Vec<&str> = entries[2..]
        .iter()
        .map(|e| e["context_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["message", "file", "system"]);
    assert!(s.close().await.success());
}

#[tokio::test]
async fn update_context_batch_is_contiguous_and_accepts_type_alias() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await;
    append(&s, "k", "one").await; // seq 2
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": [
                {"context_type": "message", "content": "b1"},
                {"type": "file", "content": "b2", "metadata": {"path": "src/x.rs"}},
                {"contextType": "tool_call", "content": "b3"},
            ]}),
        )
        .await;
    let b = r.ok();
    assert!(b.get("context_entry").is_none(), "{b}");
    let acks = b["context_entries"].as_array().expect("context_entries");
    let seqs: Vec<i64> = acks
        .iter()
        .map(|a| a["sequence_number"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let types: Vec<&str> = acks
        .iter()
        .map(|a| a["context_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["message", "file", "tool_call"]);
    for a in acks {
        assert!(is_uuid(&a["id"]));
        assert_eq!(a["content_length"], 2);
    }
    assert_eq!(b["session"]["status"], "active");
    let entries = assert_seqs(&s, "k", 5).await;
    assert_eq!(entries[3]["metadata"], json!({"path": "src/x.rs"}));
    // A full batch of 100 is accepted and stays contiguous.
    let many: Vec<Value> = (0..100)
        .map(|i| json!({"context_type": "message", "content": format!("m{i}")}))
        .collect();
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": many}),
        )
        .await;
    let acks = r.ok()["context_entries"].as_array().unwrap().clone();
    assert_eq!(acks.len(), 100);
    assert_eq!(acks[0]["sequence_number"], 6);
    assert_eq!(acks[99]["sequence_number"], 105);
    assert_seqs(&s, "k", 105).await;
    assert!(s.close().await.success());
}

#[tokio::test]
async fn batch_with_invalid_third_entry_stores_nothing() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await;
    let good = |c: &str| json!({"context_type": "message", "content": c});
    // Empty content in entry 3.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": [good("a"), good("b"), {"context_type": "message", "content": ""}, good("d")]}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert!(e["error"].as_str().unwrap().contains("entries[2]"), "{e}");
    assert_seqs(&s, "k", 1).await;
    // Too-large content in entry 3.
    let big = "x".repeat(MIB + 1);
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": [good("a"), good("b"), {"context_type": "file", "content": big}]}),
        )
        .await;
    let e = r.err("PAYLOAD_TOO_LARGE");
    assert_eq!(e["details"]["field"], "entries[2].content", "{e}");
    assert_seqs(&s, "k", 1).await;
    // Bad type in entry 3.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": [good("a"), good("b"), {"context_type": "banana", "content": "c"}]}),
        )
        .await;
    r.err("VALIDATION_ERROR");
    // Unknown field in entry 3 is named with its path.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": [good("a"), good("b"), {"context_type": "message", "content": "c", "colour": "red"}]}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert!(e["error"].as_str().unwrap().contains("colour"), "{e}");
    // `type` and `context_type` together in one entry.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": [good("a"), good("b"), {"context_type": "message", "type": "file", "content": "c"}]}),
        )
        .await;
    r.err("VALIDATION_ERROR");
    assert_seqs(&s, "k", 1).await;
    // The next valid batch continues right after, gap-free.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": [good("a"), good("b"), good("c")]}),
        )
        .await;
    let seqs: Vec<i64> = r.ok()["context_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["sequence_number"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_seqs(&s, "k", 4).await;
    assert!(s.close().await.success());
}

#[tokio::test]
async fn batch_size_limits() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await;
    let r = s
        .call("update_context", json!({"session_key": "k", "entries": []}))
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert_eq!(e["details"]["field"], "entries");
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"context_type": "message", "content": format!("m{i}")}))
        .collect();
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": many}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert_eq!(e["details"]["field"], "entries");
    // Mixing the single and batch forms.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "content": "x", "entries": [{"context_type": "message", "content": "y"}]}),
        )
        .await;
    r.err("VALIDATION_ERROR");
    // Neither form.
    let r = s.call("update_context", json!({"session_key": "k"})).await;
    r.err("VALIDATION_ERROR");
    assert_seqs(&s, "k", 1).await;
    assert!(s.close().await.success());
}

#[tokio::test]
async fn concurrent_appends_get_distinct_gap_free_sequences() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await;
    let calls = (0..40).map(|i| {
        s.call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": format!("c{i}")}),
        )
    });
    let outs = futures::future::join_all(calls).await;
    let mut by_seq = std::collections::BTreeMap::new();
    for (i, o) in outs.iter().enumerate() {
        let seq = o.ok()["context_entry"]["sequence_number"].as_i64().unwrap();
        assert!(
            by_seq.insert(seq, format!("c{i}")).is_none(),
            "seq {seq} twice"
        );
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (2..=41).collect::<Vec<_>>()
    );
    // What was acknowledged at a sequence number is what is stored there.
    let entries = assert_seqs(&s, "k", 41).await;
    for e in &entries[1..] {
        let seq = e["sequence_number"].as_i64().unwrap();
        assert_eq!(e["content"], by_seq[&seq], "entry {seq}");
    }
    assert!(s.close().await.success());
}

// ---- validation errors ----------------------------------------------------------

#[tokio::test]
async fn validation_errors_name_the_field_and_change_nothing() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await;

    // Missing field.
    let r = s
        .call("register_session", json!({"session_key": "new"}))
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert!(e["error"].as_str().unwrap().contains("agent_from"), "{e}");
    assert_eq!(e["retryable"], false);
    let r = s
        .call(
            "update_context",
            json!({"context_type": "message", "content": "x"}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert!(e["error"].as_str().unwrap().contains("session_key"), "{e}");

    // Wrong type.
    let r = s
        .call(
            "register_session",
            json!({"session_key": 5, "agent_from": "a"}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert_eq!(e["details"]["field"], "session_key", "{e}");
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": ["not", "a", "string"]}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert_eq!(e["details"]["field"], "content", "{e}");
    let r = s
        .call(
            "get_context",
            json!({"session_key": "k", "after_sequence": "zero"}),
        )
        .await;
    r.err("VALIDATION_ERROR");

    // Unknown field, named.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": "x", "colour": "red"}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert!(e["error"].as_str().unwrap().contains("colour"), "{e}");
    assert_eq!(e["details"]["unknown_fields"], json!(["colour"]), "{e}");

    // Both spellings of one field.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "sessionKey": "k", "context_type": "message", "content": "x"}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert_eq!(e["details"]["field"], "session_key", "{e}");
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "b", "targetAgent": "c"}),
        )
        .await;
    r.err("VALIDATION_ERROR");

    // Bad context_type.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "banana", "content": "x"}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert_eq!(e["details"]["field"], "context_type", "{e}");
    let r = s
        .call(
            "get_context",
            json!({"session_key": "k", "context_types": ["message", "banana"]}),
        )
        .await;
    r.err("VALIDATION_ERROR");

    // Empty content.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": ""}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert_eq!(e["details"]["field"], "content", "{e}");

    // Metadata not an object.
    for bad in [json!("str"), json!([1, 2]), json!(3)] {
        let r = s
            .call(
                "update_context",
                json!({"session_key": "k", "context_type": "message", "content": "x", "metadata": bad}),
            )
            .await;
        let e = r.err("VALIDATION_ERROR");
        assert_eq!(e["details"]["field"], "metadata", "{e}");
    }
    let r = s
        .call(
            "register_session",
            json!({"session_key": "new", "agent_from": "a", "metadata": "str"}),
        )
        .await;
    r.err("VALIDATION_ERROR");

    // Metadata depth: 8 is fine, 9 is not.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": "x", "metadata": nested(9)}),
        )
        .await;
    let e = r.err("VALIDATION_ERROR");
    assert_eq!(e["details"]["field"], "metadata", "{e}");
    assert_seqs(&s, "k", 1).await;
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": "x", "metadata": nested(8)}),
        )
        .await;
    assert_eq!(r.ok()["context_entry"]["sequence_number"], 2);

    // Page limits.
    for limit in [0, 1001] {
        let r = s
            .call("get_context", json!({"session_key": "k", "limit": limit}))
            .await;
        let e = r.err("VALIDATION_ERROR");
        assert_eq!(e["details"]["field"], "limit", "{e}");
    }
    let r = s
        .call("get_context", json!({"session_key": "k", "limit": 1000}))
        .await;
    assert_eq!(r.ok()["entries"].as_array().unwrap().len(), 2);
    let r = s
        .call(
            "get_context",
            json!({"session_key": "k", "after_sequence": -1}),
        )
        .await;
    r.err("VALIDATION_ERROR");

    // Bad enum values in request_handoff.
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "b", "request_type": "steal"}),
        )
        .await;
    r.err("VALIDATION_ERROR");
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "b", "request_data": {"priority": "whenever"}}),
        )
        .await;
    r.err("VALIDATION_ERROR");

    // request_data must be an object.
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "b", "request_data": "urgent please"}),
        )
        .await;
    r.err("VALIDATION_ERROR");

    // Nothing above added an entry or a session.
    assert_seqs(&s, "k", 2).await;
    s.call("get_context", json!({"session_key": "new"}))
        .await
        .err("SESSION_NOT_FOUND");
    let sessions = s.read("handoff://sessions").await.expect("sessions");
    assert_eq!(sessions["total"], 1);
    assert!(s.close().await.success());
}

#[tokio::test]
async fn key_and_agent_id_limits() {
    let (_db, s) = start(&[]).await;
    // Control characters in session_key.
    for bad in ["a\u{7}b", "line\nbreak", "tab\there", "nul\u{0}"] {
        let r = s
            .call(
                "register_session",
                json!({"session_key": bad, "agent_from": "a"}),
            )
            .await;
        let e = r.err("VALIDATION_ERROR");
        assert_eq!(e["details"]["field"], "session_key", "{e}");
    }
    // Empty key.
    s.call(
        "register_session",
        json!({"session_key": "", "agent_from": "a"}),
    )
    .await
    .err("VALIDATION_ERROR");
    // 256 bytes refused, 255 accepted (bytes, not chars: é is 2 bytes).
    let k256 = "k".repeat(256);
    let e = s
        .call(
            "register_session",
            json!({"session_key": k256, "agent_from": "a"}),
        )
        .await;
    assert_eq!(e.err("VALIDATION_ERROR")["details"]["field"], "session_key");
    let k256_multibyte = "é".repeat(128);
    s.call(
        "register_session",
        json!({"session_key": k256_multibyte, "agent_from": "a"}),
    )
    .await
    .err("VALIDATION_ERROR");
    let k255 = "k".repeat(255);
    register(&s, &k255, "a").await;
    // Agent ids: 101 bytes refused, 100 accepted.
    let a101 = "a".repeat(101);
    let a100 = "a".repeat(100);
    let e = s
        .call(
            "register_session",
            json!({"session_key": "x", "agent_from": a101}),
        )
        .await;
    assert_eq!(e.err("VALIDATION_ERROR")["details"]["field"], "agent_from");
    s.call(
        "register_session",
        json!({"session_key": "x", "agent_from": "a\u{1b}[31m"}),
    )
    .await
    .err("VALIDATION_ERROR");
    s.call(
        "register_session",
        json!({"session_key": "x", "agent_from": ""}),
    )
    .await
    .err("VALIDATION_ERROR");
    let e = s
        .call(
            "request_handoff",
            json!({"session_key": k255, "target_agent": a101}),
        )
        .await;
    assert_eq!(
        e.err("VALIDATION_ERROR")["details"]["field"],
        "target_agent"
    );
    s.call(
        "request_handoff",
        json!({"session_key": k255, "target_agent": "b\u{7}"}),
    )
    .await
    .err("VALIDATION_ERROR");
    // Keys over the limit are refused by the read tools too.
    s.call("get_context", json!({"session_key": "k".repeat(256)}))
        .await
        .err("VALIDATION_ERROR");
    s.call("delete_session", json!({"session_key": "k".repeat(256)}))
        .await
        .err("VALIDATION_ERROR");
    // Nothing was created by the refusals; the 255-byte session is intact.
    assert_seqs(&s, &k255, 1).await;
    let sessions = s.read("handoff://sessions").await.expect("sessions");
    assert_eq!(sessions["total"], 1);
    register(&s, "x", &a100).await;
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "x", "target_agent": a100}),
        )
        .await;
    assert_eq!(r.ok()["handoff"]["target_agent"], a100);
    assert!(s.close().await.success());
}

#[tokio::test]
async fn payload_too_large_and_changes_nothing() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await;
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "file", "content": "x".repeat(MIB + 1)}),
        )
        .await;
    let e = r.err("PAYLOAD_TOO_LARGE");
    assert_eq!(e["details"]["field"], "content");
    assert_eq!(e["details"]["limit_bytes"], MIB);
    assert_eq!(e["details"]["actual_bytes"], MIB + 1);
    assert_eq!(e["retryable"], false);
    // Metadata over 16 KiB serialised: `{"blob":"…"}` is 11 bytes + the blob.
    let exact = json!({"blob": "m".repeat(16 * 1024 - 11)});
    assert_eq!(exact.to_string().len(), 16 * 1024);
    let fat = json!({"blob": "m".repeat(16 * 1024 - 10)});
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": "x", "metadata": fat}),
        )
        .await;
    let e = r.err("PAYLOAD_TOO_LARGE");
    assert_eq!(e["details"]["field"], "metadata");
    let r = s
        .call(
            "register_session",
            json!({"session_key": "other", "agent_from": "a", "metadata": fat}),
        )
        .await;
    r.err("PAYLOAD_TOO_LARGE");
    s.call("get_context", json!({"session_key": "other"}))
        .await
        .err("SESSION_NOT_FOUND");
    // request_data is bounded like metadata.
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "b", "request_data": {"instructions": "i".repeat(17 * 1024)}}),
        )
        .await;
    r.err("PAYLOAD_TOO_LARGE");
    assert_seqs(&s, "k", 1).await;
    // Exactly at the limits is fine.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": "meta", "metadata": exact}),
        )
        .await;
    assert_eq!(r.ok()["context_entry"]["sequence_number"], 2);
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "file", "content": "x".repeat(MIB)}),
        )
        .await;
    let b = r.ok();
    assert_eq!(b["context_entry"]["sequence_number"], 3);
    assert_eq!(b["context_entry"]["content_length"], MIB);
    let entries = assert_seqs(&s, "k", 3).await;
    assert_eq!(
        entries[1]["metadata"]["blob"].as_str().unwrap().len(),
        16 * 1024 - 11
    );
    assert_eq!(entries[2]["content"].as_str().unwrap().len(), MIB);
    assert!(s.close().await.success());
}

#[tokio::test]
async fn unknown_fields_ignored_by_policy() {
    let (_db, s) = start(&[("HANDOFF_UNKNOWN_FIELDS", "ignore")]).await;
    let r = s
        .call(
            "register_session",
            json!({"session_key": "k", "agent_from": "a", "bogus": true}),
        )
        .await;
    r.ok();
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": "x", "colour": "red",
                   "entriez": 1}),
        )
        .await;
    assert_eq!(r.ok()["context_entry"]["sequence_number"], 2);
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": [{"type": "file", "content": "y", "extra": 1}]}),
        )
        .await;
    assert_eq!(r.ok()["context_entries"][0]["sequence_number"], 3);
    let r = s
        .call("get_context", json!({"session_key": "k", "page": 9}))
        .await;
    assert_eq!(r.ok()["entries"].as_array().unwrap().len(), 3);
    // Ignoring unknown fields does not relax anything else.
    s.call(
        "update_context",
        json!({"session_key": "k", "sessionKey": "k", "context_type": "message", "content": "x"}),
    )
    .await
    .err("VALIDATION_ERROR");
    s.call(
        "update_context",
        json!({"session_key": "k", "context_type": "message", "content": ""}),
    )
    .await
    .err("VALIDATION_ERROR");
    assert_seqs(&s, "k", 3).await;
    assert!(s.close().await.success());
}

#[tokio::test]
async fn camel_case_arguments_accepted() {
    let (_db, s) = start(&[]).await;
    let r = s
        .call(
            "register_session",
            json!({"sessionKey": "k", "agentFrom": "a", "metadata": {"m": 1}}),
        )
        .await;
    assert_eq!(r.ok()["session"]["agent_from"], "a");
    let r = s
        .call(
            "update_context",
            json!({"sessionKey": "k", "contextType": "file", "content": "c1"}),
        )
        .await;
    assert_eq!(r.ok()["context_entry"]["context_type"], "file");
    append(&s, "k", "c2").await;
    let r = s
        .call(
            "get_context",
            json!({"sessionKey": "k", "afterSequence": 1, "limit": 10, "contextTypes": ["file"]}),
        )
        .await;
    let b = r.ok();
    let entries = b["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["content"], "c1");
    let r = s
        .call(
            "request_handoff",
            json!({"sessionKey": "k", "targetAgent": "b", "requestType": "collaboration",
                   "requestData": {"instructions": "go", "priority": "urgent"}}),
        )
        .await;
    let h = &r.ok()["handoff"];
    assert_eq!(h["target_agent"], "b");
    assert_eq!(h["request_type"], "collaboration");
    assert_eq!(h["priority"], "urgent");
    let r = s
        .call(
            "delete_session",
            json!({"sessionKey": "k", "requestedBy": "a"}),
        )
        .await;
    assert_eq!(r.ok()["session_key"], "k");
    assert!(s.close().await.success());
}

// ---- request_handoff ------------------------------------------------------------

#[tokio::test]
async fn request_handoff_context_transfer_shape() {
    let (_db, s) = start(&[]).await;
    let reg = register(&s, "k", "alice").await;
    append(&s, "k", "m1").await;
    s.call(
        "update_context",
        json!({"session_key": "k", "context_type": "file", "content": "f1"}),
    )
    .await
    .ok();
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "bob",
                   "request_data": {"instructions": "finish the parser", "priority": "high"}}),
        )
        .await;
    let b = r.ok();
    let h = &b["handoff"];
    assert!(is_uuid(&h["id"]), "{h}");
    assert_eq!(h["session_key"], "k");
    assert_eq!(h["source_agent"], "alice");
    assert_eq!(h["target_agent"], "bob");
    assert_eq!(h["request_type"], "context_transfer");
    assert_eq!(h["status"], "pending");
    assert_eq!(h["priority"], "high");
    assert!(is_rfc3339_utc(&h["created_at"]), "{h}");
    // register + message + file + the handoff's own system entry.
    let total = assert_seqs(&s, "k", 4).await.len() as i64;
    assert_eq!(h["context_entries"], total, "{h}");
    let cs = &h["context_summary"];
    assert_eq!(cs["entry_counts"]["message"], 1, "{cs}");
    assert_eq!(cs["entry_counts"]["file"], 1, "{cs}");
    assert_eq!(cs["entry_counts"]["tool_call"], 0, "{cs}");
    assert!(cs["entry_counts"]["system"].as_i64().unwrap() >= 1, "{cs}");
    assert!(
        cs["summary"].as_str().is_some_and(|t| !t.is_empty()),
        "{cs}"
    );
    let ins = &b["instructions"];
    assert!(ins["message"].as_str().is_some_and(|m| m.contains("bob")));
    let steps: Vec<&str> = ins["next_steps"]
        .as_array()
        .expect("next_steps")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!steps.is_empty());
    assert!(
        steps.iter().any(|s| s.contains("finish the parser")),
        "{steps:?}"
    );
    // The session stays active and takes further entries.
    let up = append(&s, "k", "after").await;
    assert_eq!(up["context_entry"]["sequence_number"], 5);
    assert_eq!(up["session"]["status"], "active");
    assert_eq!(up["session"]["id"], reg["session"]["id"]);
    // Default request type and priority.
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "carol"}),
        )
        .await;
    let h = &r.ok()["handoff"];
    assert_eq!(h["request_type"], "context_transfer");
    assert_eq!(h["priority"], "normal");
    assert_eq!(h["context_entries"], 6);
    assert!(s.close().await.success());
}

#[tokio::test]
async fn full_handoff_completes_session() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "alice").await;
    append(&s, "k", "m1").await;
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "bob", "request_type": "full_handoff"}),
        )
        .await;
    let h = &r.ok()["handoff"];
    assert_eq!(h["request_type"], "full_handoff");
    assert_eq!(h["status"], "pending");
    assert_eq!(h["context_entries"], 3);
    let sessions = s.read("handoff://sessions").await.expect("sessions");
    assert_eq!(sessions["sessions"][0]["status"], "completed");
    let summary = s.read("handoff://summary/k").await.expect("summary");
    assert_eq!(summary["status"], "completed");
    // No further writes: SESSION_NOT_ACTIVE with the current status.
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": "late"}),
        )
        .await;
    let e = r.err("SESSION_NOT_ACTIVE");
    assert_eq!(e["details"]["current_status"], "completed", "{e}");
    assert_eq!(e["retryable"], false);
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "entries": [{"context_type": "message", "content": "late"}]}),
        )
        .await;
    r.err("SESSION_NOT_ACTIVE");
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "carol"}),
        )
        .await;
    let e = r.err("SESSION_NOT_ACTIVE");
    assert_eq!(e["details"]["current_status"], "completed", "{e}");
    // A completed session is not active: registering its key again is refused.
    let r = s
        .call(
            "register_session",
            json!({"session_key": "k", "agent_from": "x"}),
        )
        .await;
    let e = r.err("SESSION_EXISTS");
    assert_eq!(e["details"]["existing_session"]["status"], "completed");
    // The failures added nothing; the context stays readable.
    let entries = assert_seqs(&s, "k", 3).await;
    assert_eq!(entries[1]["content"], "m1");
    assert!(s.close().await.success());
}

#[tokio::test]
async fn collaboration_adds_participant() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "alice").await;
    let r = s
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "bob", "request_type": "collaboration",
                   "request_data": {"priority": "low"}}),
        )
        .await;
    let h = &r.ok()["handoff"];
    assert_eq!(h["request_type"], "collaboration");
    assert_eq!(h["priority"], "low");
    let participants = h["context_summary"]["participants"]
        .as_array()
        .expect("participants");
    assert!(participants.contains(&json!("bob")), "{h}");
    // Session stays active.
    let up = append(&s, "k", "from bob").await;
    assert_eq!(up["session"]["status"], "active");
    let summary = s.read("handoff://summary/k").await.expect("summary");
    let participants = summary["participants"].as_array().unwrap();
    assert!(participants.contains(&json!("alice")), "{summary}");
    assert!(participants.contains(&json!("bob")), "{summary}");
    assert_eq!(summary["status"], "active");
    assert!(s.close().await.success());
}

// ---- get_context ------------------------------------------------------------------

#[tokio::test]
async fn get_context_paging_and_filters() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await; // 1: system
    let entries: Vec<Value> = (2..=7)
        .map(|i| {
            let t = if i % 2 == 0 { "message" } else { "file" };
            json!({"context_type": t, "content": format!("e{i}"), "metadata": {"i": i}})
        })
        .collect();
    s.call(
        "update_context",
        json!({"session_key": "k", "entries": entries}),
    )
    .await
    .ok();
    // Default page returns all 7 in order.
    let r = s.call("get_context", json!({"session_key": "k"})).await;
    let b = r.ok();
    assert_eq!(b["session_key"], "k");
    assert_eq!(b["entries"].as_array().unwrap().len(), 7);
    assert_eq!(b["has_more"], false);
    assert_eq!(b["next_after_sequence"], 7);
    let e = &b["entries"][3];
    assert_eq!(e["sequence_number"], 4);
    assert_eq!(e["context_type"], "message");
    assert_eq!(e["content"], "e4");
    assert_eq!(e["metadata"], json!({"i": 4}));
    assert!(is_rfc3339_utc(&e["created_at"]));
    assert_eq!(b["entries"][0]["metadata"], json!({}));
    // Pages of 3.
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = s
            .call(
                "get_context",
                json!({"session_key": "k", "after_sequence": after, "limit": 3}),
            )
            .await;
        let b = r.ok().clone();
        let page: Vec<i64> = b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sequence_number"].as_i64().unwrap())
            .collect();
        assert!(page.len() <= 3);
        pages += 1;
        if let Some(last) = page.last() {
            assert_eq!(b["next_after_sequence"], *last);
        }
        seen.extend(page);
        after = b["next_after_sequence"].as_i64().unwrap();
        if b["has_more"] == false {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, (1..=7).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    // After the end: empty, no more, cursor stays put.
    let r = s
        .call(
            "get_context",
            json!({"session_key": "k", "after_sequence": 7}),
        )
        .await;
    let b = r.ok();
    assert!(b["entries"].as_array().unwrap().is_empty());
    assert_eq!(b["has_more"], false);
    assert_eq!(b["next_after_sequence"], 7);
    // Filter by type, with paging.
    let r = s
        .call(
            "get_context",
            json!({"session_key": "k", "context_types": ["file"], "limit": 2}),
        )
        .await;
    let b = r.ok().clone();
    let seqs: Vec<i64> = b["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["context_type"], "file");
            e["sequence_number"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(seqs, [3, 5]);
    assert_eq!(b["has_more"], true);
    assert_eq!(b["next_after_sequence"], 5);
    let r = s
        .call(
            "get_context",
            json!({"session_key": "k", "context_types": ["file"], "limit": 2, "after_sequence": 5}),
        )
        .await;
    let b = r.ok();
    assert_eq!(b["entries"].as_array().unwrap().len(), 1);
    assert_eq!(b["entries"][0]["sequence_number"], 7);
    assert_eq!(b["has_more"], false);
    let r = s
        .call(
            "get_context",
            json!({"session_key": "k", "context_types": ["system", "message"]}),
        )
        .await;
    let seqs: Vec<i64> = r.ok()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence_number"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 4, 6]);
    assert!(s.close().await.success());
}

// ---- delete_session ---------------------------------------------------------------

#[tokio::test]
async fn delete_session_erases_everything() {
    let (_db, s) = start(&[]).await;
    let reg = register(&s, "k", "a").await;
    append(&s, "k", "secret").await;
    s.call(
        "request_handoff",
        json!({"session_key": "k", "target_agent": "b"}),
    )
    .await
    .ok();
    register(&s, "keep", "a").await;
    let r = s
        .call(
            "delete_session",
            json!({"session_key": "k", "requested_by": "a"}),
        )
        .await;
    let b = r.ok();
    assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(b["session_key"], "k");
    assert_eq!(b["session_id"], reg["session"]["id"]);
    assert_eq!(b["entries_removed"], 3);
    // Gone from every read path.
    s.call("get_context", json!({"session_key": "k"}))
        .await
        .err("SESSION_NOT_FOUND");
    let e = mcp_error(
        s.read("handoff://summary/k")
            .await
            .expect_err("summary of deleted"),
    );
    assert_error_data(&e, "SESSION_NOT_FOUND");
    let sessions = s.read("handoff://sessions").await.expect("sessions");
    assert_eq!(sessions["total"], 1);
    assert_eq!(sessions["sessions"][0]["session_key"], "keep");
    // Deleting again: SESSION_NOT_FOUND.
    let r = s.call("delete_session", json!({"session_key": "k"})).await;
    let e = r.err("SESSION_NOT_FOUND");
    assert_eq!(e["details"]["session_key"], "k");
    // The key can be registered afresh: a new session starting at 1.
    let again = register(&s, "k", "c").await;
    assert_ne!(again["session"]["id"], reg["session"]["id"]);
    assert_eq!(again["reactivated"], false);
    let entries = assert_seqs(&s, "k", 1).await;
    assert!(!entries[0]["content"].as_str().unwrap().contains("secret"));
    // The other session is untouched.
    assert_seqs(&s, "keep", 1).await;
    assert!(s.close().await.success());
}

// ---- SESSION_NOT_FOUND --------------------------------------------------------------

#[tokio::test]
async fn missing_session_everywhere() {
    let (_db, s) = start(&[]).await;
    let calls = [
        (
            "update_context",
            json!({"session_key": "nope", "context_type": "message", "content": "x"}),
        ),
        (
            "update_context",
            json!({"session_key": "nope", "entries": [{"context_type": "message", "content": "x"}]}),
        ),
        (
            "request_handoff",
            json!({"session_key": "nope", "target_agent": "b"}),
        ),
        ("get_context", json!({"session_key": "nope"})),
        ("delete_session", json!({"session_key": "nope"})),
    ];
    for (tool, args) in calls {
        let r = s.call(tool, args).await;
        let e = r.err("SESSION_NOT_FOUND");
        assert_eq!(e["details"]["session_key"], "nope", "{tool}: {e}");
        assert_eq!(e["retryable"], false);
    }
    for uri in ["handoff://summary/nope", "handoff://context/nope"] {
        let e = mcp_error(s.read(uri).await.expect_err(uri));
        assert_error_data(&e, "SESSION_NOT_FOUND");
    }
    // None of that created the session.
    let sessions = s.read("handoff://sessions").await.expect("sessions");
    assert_eq!(sessions["total"], 0);
    assert_eq!(sessions["sessions"], json!([]));
    assert!(s.close().await.success());
}

#[tokio::test]
async fn error_shape_has_unique_request_ids() {
    let (_db, s) = start(&[]).await;
    let a = s.call("get_context", json!({"session_key": "nope"})).await;
    let b = s.call("get_context", json!({"session_key": "nope"})).await;
    let ea = a.err("SESSION_NOT_FOUND").clone();
    let eb = b.err("SESSION_NOT_FOUND").clone();
    assert!(is_uuid(&ea["request_id"]));
    assert_ne!(ea["request_id"], eb["request_id"]);
    assert!(is_rfc3339_utc(&ea["timestamp"]), "{ea}");
    let ToolOut { is_error, body } = s.call("get_context", json!({})).await;
    assert!(is_error);
    assert_eq!(body["error_code"], "VALIDATION_ERROR");
    assert!(s.close().await.success());
}

// ---- resources ----------------------------------------------------------------------

#[tokio::test]
async fn resources_and_templates_listed() {
    let (_db, s) = start(&[]).await;
    let res = s.client.list_all_resources().await.expect("resources/list");
    let uris: Vec<&str> = res.iter().map(|r| r.uri.as_str()).collect();
    for want in [
        "handoff://sessions",
        "handoff://health",
        "handoff://metrics",
    ] {
        assert!(uris.contains(&want), "{want} missing from {uris:?}");
    }
    let templates = s
        .client
        .list_all_resource_templates()
        .await
        .expect("resources/templates/list");
    let t: Vec<&str> = templates.iter().map(|r| r.uri_template.as_str()).collect();
    for want in [
        "handoff://context/{session_key}",
        "handoff://summary/{session_key}",
    ] {
        assert!(t.contains(&want), "{want} missing from {t:?}");
    }
    assert!(s.close().await.success());
}

#[tokio::test]
async fn context_resource_pages_and_decodes_keys() {
    let (_db, s) = start(&[]).await;
    let key = "a b/c";
    register(&s, key, "a").await;
    for i in 2..=5 {
        append(&s, key, &format!("e{i}")).await;
    }
    let base = format!("handoff://context/{}", enc(key));
    assert_eq!(base, "handoff://context/a%20b%2Fc");
    let all = s.read(&base).await.expect("context");
    assert_eq!(all["session_key"], key);
    assert_eq!(all["entries"].as_array().unwrap().len(), 5);
    assert_eq!(all["has_more"], false);
    assert_eq!(all["next_after_sequence"], 5);
    assert_eq!(all["entries"][4]["content"], "e5");
    let p1 = s
        .read(&format!("{base}?after=0&limit=2"))
        .await
        .expect("p1");
    let seqs = |v: &Value| -> Vec<i64> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sequence_number"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&p1), [1, 2]);
    assert_eq!(p1["has_more"], true);
    assert_eq!(p1["next_after_sequence"], 2);
    let p2 = s
        .read(&format!("{base}?after=2&limit=2"))
        .await
        .expect("p2");
    assert_eq!(seqs(&p2), [3, 4]);
    assert_eq!(p2["has_more"], true);
    let p3 = s
        .read(&format!("{base}?after=4&limit=2"))
        .await
        .expect("p3");
    assert_eq!(seqs(&p3), [5]);
    assert_eq!(p3["has_more"], false);
    assert_eq!(p3["next_after_sequence"], 5);
    // Bad paging parameters are protocol errors with VALIDATION_ERROR.
    for q in ["?limit=0", "?limit=1001", "?after=x"] {
        let e = mcp_error(
            s.read(&format!("{base}{q}"))
                .await
                .expect_err("bad query must fail"),
        );
        assert_error_data(&e, "VALIDATION_ERROR");
    }
    // Reserved characters in keys survive the round trip.
    let odd = "q?x=1&y=100%#frag";
    register(&s, odd, "a").await;
    append(&s, odd, "odd").await;
    let v = s
        .read(&format!("handoff://context/{}?after=1&limit=5", enc(odd)))
        .await
        .expect("odd key");
    assert_eq!(v["session_key"], odd);
    assert_eq!(v["entries"][0]["content"], "odd");
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    // The summary resource decodes the key the same way.
    let sum = s
        .read(&format!("handoff://summary/{}", enc(key)))
        .await
        .expect("summary");
    assert_eq!(sum["session_key"], key);
    assert!(s.close().await.success());
}

#[tokio::test]
async fn summary_resource_fields() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "alice").await;
    append(&s, "k", "m1").await;
    append(&s, "k", "m2").await;
    s.call(
        "update_context",
        json!({"session_key": "k", "context_type": "tool_call", "content": "t1"}),
    )
    .await
    .ok();
    s.call(
        "request_handoff",
        json!({"session_key": "k", "target_agent": "bob", "request_type": "collaboration"}),
    )
    .await
    .ok();
    let v = s.read("handoff://summary/k").await.expect("summary");
    assert_eq!(v["session_key"], "k");
    assert!(
        v["summary"].as_str().is_some_and(|t| t.contains('k')),
        "{v}"
    );
    let counts = &v["entry_counts"];
    assert_eq!(counts["message"], 2, "{v}");
    assert_eq!(counts["tool_call"], 1, "{v}");
    assert_eq!(counts["file"], 0, "{v}");
    assert_eq!(counts["system"], 2, "{v}"); // registration + handoff
    let participants = v["participants"].as_array().expect("participants");
    assert!(participants.contains(&json!("alice")), "{v}");
    assert!(participants.contains(&json!("bob")), "{v}");
    assert!(is_rfc3339_utc(&v["generated_at"]), "{v}");
    assert!(s.close().await.success());
}

#[tokio::test]
async fn sessions_resource_pages() {
    let (_db, s) = start(&[]).await;
    for k in ["s1", "s2", "s3", "s4", "s5"] {
        register(&s, k, "agent").await;
    }
    let first = s.read("handoff://sessions").await.expect("sessions");
    assert_eq!(first["total"], 5);
    assert_eq!(first["sessions"].as_array().unwrap().len(), 5);
    assert!(first["next_cursor"].is_null(), "{first}");
    let one = &first["sessions"][0];
    for f in ["session_key", "status", "agent_from"] {
        assert!(one[f].is_string(), "{f} in {one}");
    }
    assert_eq!(one["status"], "active");
    assert_eq!(one["agent_from"], "agent");
    assert!(is_rfc3339_utc(&one["created_at"]), "{one}");
    assert!(is_rfc3339_utc(&one["last_activity_at"]), "{one}");

    let mut uri = "handoff://sessions?limit=2".to_string();
    let mut keys = Vec::new();
    let mut pages = 0;
    loop {
        let v = s.read(&uri).await.expect("page");
        pages += 1;
        assert_eq!(v["total"], 5);
        let page = v["sessions"].as_array().unwrap();
        assert!(page.len() <= 2);
        keys.extend(
            page.iter()
                .map(|x| x["session_key"].as_str().unwrap().to_string()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => uri = format!("handoff://sessions?limit=2&cursor={}", enc(c)),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ["s1", "s2", "s3", "s4", "s5"]);
    assert_eq!(keys.len(), 5, "no session twice: {keys:?}");
    let e = mcp_error(
        s.read("handoff://sessions?limit=0")
            .await
            .expect_err("limit 0"),
    );
    assert_error_data(&e, "VALIDATION_ERROR");
    assert!(s.close().await.success());
}

#[tokio::test]
async fn health_resource() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await;
    let v = s.read("handoff://health").await.expect("health");
    assert_eq!(v["status"], "ok", "{v}");
    assert!(is_rfc3339_utc(&v["timestamp"]), "{v}");
    let comps = v["components"].as_array().expect("components");
    let find = |n: &str| comps.iter().find(|c| c["name"] == n).cloned();
    let db = find("database").expect("database component");
    assert_eq!(db["status"], "ok");
    assert!(find("cache").is_some(), "no cache component: {v}");
    let br = find("breaker.database").expect("breaker.database component");
    assert_eq!(br["status"], "ok");
    assert!(br["details"].is_object());
    let actors: Vec<&Value> = comps
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("actor.")))
        .collect();
    assert!(!actors.is_empty(), "no actor.* components: {v}");
    for a in actors {
        assert_eq!(a["status"], "ok", "{a}");
    }
    for c in comps {
        assert!(c["name"].is_string() && c["status"].is_string(), "{c}");
        assert!(c["details"].is_object(), "{c}");
    }
    assert!(s.close().await.success());
}

#[tokio::test]
async fn metrics_resource() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await;
    s.call("get_context", json!({"session_key": "nope"}))
        .await
        .err("SESSION_NOT_FOUND");
    let text = s.read_text("handoff://metrics").await.expect("metrics");
    assert!(text.contains("handoff_tool_calls_total"), "{text}");
    assert!(
        text.contains("# TYPE handoff_tool_calls_total counter"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("handoff_tool_calls_total")
                && l.contains("tool=\"register_session\"")
                && l.contains("outcome=\"ok\"")
        })
        .unwrap_or_else(|| panic!("no register_session ok counter in {text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{line}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("handoff_tool_calls_total")
                && l.contains("tool=\"get_context\"")
                && l.contains("SESSION_NOT_FOUND")),
        "{text}"
    );
    assert!(s.close().await.success());
}

#[tokio::test]
async fn unknown_resource_is_protocol_error() {
    let (_db, s) = start(&[]).await;
    for uri in [
        "handoff://nope",
        "handoff://context",
        "handoff://context/",
        "file:///etc/passwd",
        "handoff://sessions/extra/parts",
    ] {
        let e = mcp_error(s.read(uri).await.expect_err(uri));
        assert_error_data(&e, "NOT_FOUND");
        assert_eq!(e.code, rmcp::model::ErrorCode::RESOURCE_NOT_FOUND, "{uri}");
    }
    // The connection is still usable afterwards.
    let v = s.read("handoff://health").await.expect("health");
    assert_eq!(v["status"], "ok");
    assert!(s.close().await.success());
}

#[tokio::test]
async fn escape_heavy_large_entries_stay_readable() {
    let (_db, s) = start(&[]).await;
    register(&s, "k", "a").await;
    // Quotes and backslashes are what code and file content are full of;
    // each doubles in JSON, and again in the text content item.
    for c in ["\"", "\\", "\"", "\\", "\""] {
        s.call(
            "update_context",
            json!({"session_key": "k", "context_type": "file", "content": c.repeat(MIB)}),
        )
        .await
        .ok();
    }
    // Generous: this catches a reply that never comes (dropped by the
    // client), not slowness; a loaded CI machine takes seconds here.
    let entries = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        common::all_entries(&s, "k"),
    )
    .await
    .expect("get_context reply never arrived (dropped by the client as over-long)");
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[5]["content"].as_str().unwrap().len(), MIB);
    let page = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        s.read("handoff://context/k"),
    )
    .await
    .expect("context resource reply never arrived")
    .expect("context resource");
    assert!(!page["entries"].as_array().unwrap().is_empty());
    assert!(s.close().await.success());
}
