//! `handoff export` / `handoff import`: a SQLite database populated through
//! the MCP client is exported, imported into a fresh database of the suite's
//! backend (PostgreSQL with `HANDOFF_TEST_BACKEND=postgres`) and into a
//! fresh SQLite one, and read back through MCP byte for byte; exporting the
//! copy gives the same file (header aside).

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{DbDir, Server};
use serde_json::{json, Value};

const KEYS: [&str; 4] = ["plain", "odd \"key\"/ü", "handed", "long"];

fn handoff(db: &DbDir, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(common::BIN)
        .args(args)
        .env("HANDOFF_DATABASE_URL", db.url())
        .env("HANDOFF_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn handoff");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );
    out
}

async fn populate(s: &Server) {
    for (key, agent) in [
        (KEYS[0], "alice"),
        (KEYS[1], "alice"),
        (KEYS[2], "bob"),
        (KEYS[3], "carol"),
    ] {
        s.call(
            "register_session",
            json!({"session_key": key, "agent_from": agent, "metadata": {"z": 1, "a": [true, null], "nul": "\u{0}"}}),
        )
        .await
        .ok();
    }
    let tricky = [
        "nul\u{0}inside\u{0}",
        "quotes \" and \\ backslashes\n\ttabs\r\n",
        "unicode é 😀 \u{2028} \u{7f}",
        "  leading and trailing spaces  ",
    ];
    for c in tricky {
        s.call(
            "update_context",
            json!({"session_key": KEYS[0], "context_type": "message", "content": c, "metadata": {"k": c}}),
        )
        .await
        .ok();
    }
    s.call(
        "update_context",
        json!({"session_key": KEYS[1], "entries": [
            {"type": "file", "content": "a"},
            {"type": "tool_call", "content": "b", "metadata": {"exit": 0}},
            {"type": "message", "content": "c"},
        ]}),
    )
    .await
    .ok();
    s.call(
        "update_context",
        json!({"session_key": KEYS[2], "context_type": "message", "content": "over to you"}),
    )
    .await
    .ok();
    s.call(
        "request_handoff",
        json!({"session_key": KEYS[2], "target_agent": "dave", "request_type": "collaboration",
               "request_data": {"instructions": "review", "priority": "high"}}),
    )
    .await
    .ok();
    let id = s
        .call("list_handoffs", json!({"target_agent": "dave"}))
        .await
        .ok()["handoffs"][0]["id"]
        .clone();
    s.call("accept_handoff", json!({"handoff_id": id, "agent": "dave"}))
        .await
        .ok();
    s.call(
        "request_handoff",
        json!({"session_key": KEYS[1], "target_agent": "erin", "request_type": "full_handoff"}),
    )
    .await
    .ok();
    // More entries than one import batch holds (1,000).
    for round in 0..11 {
        let entries: Vec<Value> = (0..100)
            .map(|i| json!({"type": "message", "content": format!("entry {round}/{i}")}))
            .collect();
        s.call(
            "update_context",
            json!({"session_key": KEYS[3], "entries": entries}),
        )
        .await
        .ok();
    }
}

/// Everything a client can read about the sessions: every entry, the
/// summaries (less their generation time) and the handoffs.
async fn snapshot(s: &Server) -> Value {
    let mut out = serde_json::Map::new();
    for key in KEYS {
        let entries = common::all_entries(s, key).await;
        let enc = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
        let mut summary = s.read(&format!("handoff://summary/{enc}")).await.unwrap();
        summary.as_object_mut().unwrap().remove("generated_at");
        out.insert(key.into(), json!({"entries": entries, "summary": summary}));
    }
    for agent in ["dave", "erin"] {
        let h = s
            .call(
                "list_handoffs",
                json!({"target_agent": agent, "status": null}),
            )
            .await;
        out.insert(agent.into(), h.ok()["handoffs"].clone());
    }
    Value::Object(out)
}

fn body_lines(export: &[u8]) -> Vec<String> {
    let text = String::from_utf8(export.to_vec()).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(header["kind"], "header");
    assert_eq!(header["format"], "handoff-export");
    assert_eq!(header["version"], 1);
    lines[1..].to_vec()
}

#[tokio::test]
async fn round_trip_between_backends_is_exact() {
    let source = DbDir::sqlite();
    let s = Server::start(&source, &[]).await;
    populate(&s).await;
    let want = snapshot(&s).await;
    assert_eq!(want[KEYS[3]]["entries"].as_array().unwrap().len(), 1101);
    assert!(s.close().await.success());

    let file = source.path().join("export.jsonl");
    let out = handoff(
        &source,
        &["export", "--output", file.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("exported 4 sessions, 1115 entries, 2 handoffs"),
        "{out:?}"
    );
    // stderr is a pipe here: no progress bar, no escape sequences.
    assert!(!out.stderr.contains(&0x1b), "{out:?}");
    let exported = std::fs::read(&file).unwrap();
    let lines = body_lines(&exported);
    let kinds: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "session").count(), 4);
    assert_eq!(kinds.iter().filter(|k| *k == "entry").count(), 1115);
    assert_eq!(kinds.iter().filter(|k| *k == "handoff").count(), 2);
    assert_eq!(kinds.last().unwrap(), "end");
    assert!(lines.iter().any(|l| l.contains("nul\\u0000inside\\u0000")));

    // Into the suite's backend (PostgreSQL in the PostgreSQL pass), then a
    // SQLite database, one from a file and one from stdin.
    for (target, from_stdin) in [(DbDir::new(), false), (DbDir::sqlite(), true)] {
        let out = if from_stdin {
            handoff(&target, &["import", "-"], Some(&exported))
        } else {
            handoff(&target, &["import", file.to_str().unwrap()], None)
        };
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("imported 4 sessions, 1115 entries, 2 handoffs"),
            "{out:?}"
        );

        let s = Server::start(&target, &[]).await;
        assert_eq!(snapshot(&s).await, want, "read back through MCP");
        // The copy goes on where the original stopped.
        let next = s
            .call(
                "update_context",
                json!({"session_key": KEYS[0], "context_type": "message", "content": "after import"}),
            )
            .await;
        assert_eq!(next.ok()["context_entry"]["sequence_number"], 6);
        s.call(
            "update_context",
            json!({"session_key": KEYS[1], "context_type": "message", "content": "x"}),
        )
        .await
        .err("SESSION_NOT_ACTIVE");
        assert!(s.close().await.success());

        // The same keys again: fail (the default) or skip.
        let out = handoff(&target, &["import", file.to_str().unwrap()], None);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already exists"),
            "{out:?}"
        );
        let out = handoff(
            &target,
            &["import", "--on-conflict", "skip", file.to_str().unwrap()],
            None,
        );
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("skipped 4 existing sessions"),
            "{out:?}"
        );
    }

    // export → import → export: the same file but for the header.
    let copy = DbDir::new();
    assert!(handoff(&copy, &["import", file.to_str().unwrap()], None)
        .status
        .success());
    let again = handoff(&copy, &["export"], None);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(body_lines(&again.stdout), lines);

    // --session picks sessions, in the order given.
    let one = handoff(&source, &["export", "--session", KEYS[2], "-o", "-"], None);
    assert!(one.status.success());
    let one = body_lines(&one.stdout);
    assert_eq!(one.len(), 1 + 4 + 1 + 1, "session, 4 entries, handoff, end");
    assert!(one[0].contains("\"kind\":\"session\""));
    let missing = handoff(&source, &["export", "--session", "nope"], None);
    assert!(!missing.status.success());
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message() {
    let source = DbDir::sqlite();
    let s = Server::start(&source, &[]).await;
    s.call(
        "register_session",
        json!({"session_key": "k", "agent_from": "a"}),
    )
    .await
    .ok();
    assert!(s.close().await.success());
    let good = handoff(&source, &["export"], None).stdout;
    let text = String::from_utf8(good).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty input"),
        ("not json\n".into(), "line 1"),
        (lines[1..].join("\n"), "header"),
        (
            lines[0].replace("\"version\":1", "\"version\":99"),
            "unsupported export",
        ),
        (lines[..lines.len() - 1].join("\n"), "truncated"),
        (
            format!("{}\n{}\n{}", lines[0], lines[2], lines[3]),
            "does not follow its session",
        ),
        (
            text.replace("\"sequence_number\":1", "\"sequence_number\":2"),
            "sequence number 2 follows 0",
        ),
        (
            text.replace("\"sessions\":1", "\"sessions\":7"),
            "end line counts",
        ),
        (
            text.replace("\"kind\":\"entry\"", "\"kind\":\"blob\""),
            "line 3",
        ),
    ];
    for (input, want) in cases {
        let target = DbDir::sqlite();
        let out = handoff(&target, &["import", "-"], Some(input.as_bytes()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{want}: {out:?}");
        assert!(err.contains(want), "expected {want:?} in {err}");
    }
    let out = handoff(&source, &["import", "/nonexistent/file"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}
