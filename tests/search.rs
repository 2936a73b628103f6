//! `search_context`: ranked full-text search with snippets, its filters, and
//! that the index follows every write and every erasure in the same
//! transaction, on SQLite (FTS5) and PostgreSQL (tsvector). (Tenant
//! isolation cannot be shown over stdio: one tenant.)

mod common;

use common::{DbDir, Server, ToolOut};
use serde_json::{json, Value};

async fn session(s: &Server, key: &str, agent: &str, contents: &[&str]) {
    s.call(
        "register_session",
        json!({"session_key": key, "agent_from": agent}),
    )
    .await
    .ok();
    for c in contents {
        s.call(
            "update_context",
            json!({"session_key": key, "context_type": "message", "content": c}),
        )
        .await
        .ok();
    }
}

async fn search(s: &Server, args: Value) -> ToolOut {
    s.call("search_context", args).await
}

fn results(out: &ToolOut) -> Vec<Value> {
    let body = out.ok();
    let r = body["results"].as_array().unwrap().clone();
    assert_eq!(body["total_returned"], r.len(), "{body}");
    r
}

fn keys_seqs(r: &[Value]) -> Vec<(String, i64)> {
    r.iter()
        .map(|h| {
            (
                h["session_key"].as_str().unwrap().to_string(),
                h["sequence_number"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn ranked_with_snippets_and_every_term_required() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    // Background text so that the searched words are rare in the index.
    session(
        &s,
        "noise",
        "alice",
        &[
            "the login page renders slowly on mobile",
            "refactor the session store to use a pool",
            "npm test reports three failures in auth",
            "update the changelog before the release",
        ],
    )
    .await;
    // Sequence 1 is the registration's system entry.
    session(
        &s,
        "rank",
        "alice",
        &[
            "zebra zebra zebra crossing near the station", // 2: three hits
            "a zebra crossing near the old station",       // 3: one hit
            "zebra and quagga crossing near the station",  // 4: both words
            "quagga crossing near the old station",        // 5: other word only
        ],
    )
    .await;

    let out = search(&s, json!({"query": "zebra"})).await;
    let r = results(&out);
    assert_eq!(out.ok()["query"], "zebra");
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(
        keys_seqs(&r)[0],
        ("rank".into(), 2),
        "most occurrences first: {r:?}"
    );
    let scores: Vec<f64> = r.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores[0] > scores[2], "{scores:?}");
    for h in &r {
        let snip = h["snippet"].as_str().unwrap();
        assert!(snip.contains("«zebra»"), "{snip}");
        assert_eq!(h["context_type"], "message");
        assert!(
            h["created_at"].as_str().unwrap().ends_with('Z')
                || h["created_at"].as_str().unwrap().contains('+')
        );
    }

    // Every term must occur; case does not matter.
    let r = results(&search(&s, json!({"query": "ZEBRA Quagga"})).await);
    assert_eq!(keys_seqs(&r), vec![("rank".into(), 4)]);
    let snip = r[0]["snippet"].as_str().unwrap();
    assert!(
        snip.contains("«zebra»") && snip.contains("«quagga»"),
        "{snip}"
    );

    // limit
    let r = results(&search(&s, json!({"query": "station", "limit": 2})).await);
    assert_eq!(r.len(), 2);
    let r = results(&search(&s, json!({"query": "station"})).await);
    assert_eq!(r.len(), 4);

    // Nothing matches: an empty result, not an error.
    let r = results(&search(&s, json!({"query": "okapi"})).await);
    assert!(r.is_empty());

    // Long content is cut to a snippet around the match.
    let long = format!("{} okapi {}", "filler ".repeat(500), "padding ".repeat(500));
    s.call(
        "update_context",
        json!({"session_key": "noise", "context_type": "file", "content": long}),
    )
    .await
    .ok();
    let r = results(&search(&s, json!({"query": "okapi"})).await);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["context_type"], "file");
    let snip = r[0]["snippet"].as_str().unwrap();
    assert!(snip.contains("«okapi»") && snip.len() < 300, "{snip}");
    assert!(snip.starts_with('…') && snip.ends_with('…'), "{snip}");
}

#[tokio::test]
async fn session_key_and_agent_filters() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    session(&s, "f-a", "alice", &["walrus on the ice"]).await;
    session(&s, "f-b", "bob", &["another walrus swims"]).await;
    s.call(
        "request_handoff",
        json!({"session_key": "f-b", "target_agent": "carol"}),
    )
    .await
    .ok();

    let all = results(&search(&s, json!({"query": "walrus"})).await);
    assert_eq!(all.len(), 2);

    let only = |args: Value| {
        let s = &s;
        async move {
            let mut k: Vec<String> = results(&search(s, args).await)
                .iter()
                .map(|h| h["session_key"].as_str().unwrap().to_string())
                .collect();
            k.sort();
            k
        }
    };
    assert_eq!(
        only(json!({"query": "walrus", "session_key": "f-a"})).await,
        ["f-a"]
    );
    assert_eq!(
        only(json!({"query": "walrus", "sessionKey": "f-b"})).await,
        ["f-b"]
    );
    assert!(only(json!({"query": "walrus", "session_key": "nope"}))
        .await
        .is_empty());
    assert_eq!(
        only(json!({"query": "walrus", "agent": "alice"})).await,
        ["f-a"]
    );
    assert_eq!(
        only(json!({"query": "walrus", "agent": "bob"})).await,
        ["f-b"]
    );
    // carol was handed f-b.
    assert_eq!(
        only(json!({"query": "walrus", "agent": "carol"})).await,
        ["f-b"]
    );
    assert!(only(json!({"query": "walrus", "agent": "dave"}))
        .await
        .is_empty());
    assert!(
        only(json!({"query": "walrus", "agent": "alice", "session_key": "f-b"}))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn an_erased_session_is_not_found() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    session(&s, "gone", "alice", &["narwhal tusk notes", "more narwhal"]).await;
    session(&s, "kept", "alice", &["a narwhal too"]).await;
    assert_eq!(
        results(&search(&s, json!({"query": "narwhal"})).await).len(),
        3
    );

    s.call("delete_session", json!({"session_key": "gone"}))
        .await
        .ok();
    let r = results(&search(&s, json!({"query": "narwhal"})).await);
    assert_eq!(keys_seqs(&r), vec![("kept".into(), 2)]);
    assert!(results(&search(&s, json!({"query": "tusk"})).await).is_empty());

    // The key can be registered again; only the new text is found.
    session(&s, "gone", "bob", &["fresh narwhal"]).await;
    let mut k = keys_seqs(&results(&search(&s, json!({"query": "narwhal"})).await));
    k.sort();
    assert_eq!(k, vec![("gone".into(), 2), ("kept".into(), 2)]);
    assert!(results(&search(&s, json!({"query": "tusk"})).await).is_empty());
}

#[tokio::test]
async fn a_batch_is_searchable_once_acknowledged() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    session(&s, "b", "alice", &[]).await;
    let ack = s
        .call(
            "update_context",
            json!({"session_key": "b", "entries": [
                {"type": "file", "content": "src/auth.ts: refreshToken races with logout"},
                {"type": "tool_call", "content": "npm test → 3 failures in refreshToken"},
                {"type": "message", "content": "fix refreshToken first"},
            ]}),
        )
        .await;
    let seqs: Vec<i64> = ack.ok()["context_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence_number"].as_i64().unwrap())
        .collect();
    let mut found: Vec<i64> = results(&search(&s, json!({"query": "refreshtoken"})).await)
        .iter()
        .map(|h| h["sequence_number"].as_i64().unwrap())
        .collect();
    found.sort();
    assert_eq!(found, seqs);
    // Punctuation separates words, as in the index.
    let r = results(&search(&s, json!({"query": "auth.ts"})).await);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["context_type"], "file");
}

#[tokio::test]
async fn query_syntax_is_never_an_error() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    session(
        &s,
        "q",
        "alice",
        &["the walrus said: \"hello\" (twice) - maybe"],
    )
    .await;
    let queries = [
        "\"",
        "\"\"",
        "\"unterminated",
        "\"walrus\"",
        "*",
        "walrus*",
        "wal*",
        "NEAR(walrus hello)",
        "walrus NEAR hello",
        "NEAR",
        "-walrus",
        "walrus -hello",
        "NOT walrus",
        "walrus OR hello",
        "walrus AND",
        "AND",
        "OR",
        "(",
        ")",
        "((walrus)",
        "(twice)",
        "content:walrus",
        "nope:walrus",
        "{content}: walrus",
        "^walrus",
        "walrus + hello",
        "'",
        "\\",
        "%_",
        "'; DROP TABLE sessions; --",
        "\"; DELETE FROM context_entries; --",
        "«walrus»",
        "🦭 walrus",
        "a\tb\nc",
    ];
    for q in queries {
        let out = search(&s, json!({"query": q})).await;
        assert!(!out.is_error, "query {q:?} failed: {}", out.body);
    }
    // Operators and punctuation are plain words (or separators).
    for q in [
        "\"walrus\"",
        "walrus*",
        "-walrus",
        "(twice)",
        "walrus, hello!",
    ] {
        let r = results(&search(&s, json!({"query": q})).await);
        assert_eq!(r.len(), 1, "query {q:?}");
    }
    for q in ["wal*", "walrus OR nothing", "NOT walrus", "walrus NEAR"] {
        let r = results(&search(&s, json!({"query": q})).await);
        assert!(r.is_empty(), "query {q:?} is words, not syntax: {r:?}");
    }
    // The table is still there and the server healthy.
    assert_eq!(
        results(&search(&s, json!({"query": "walrus"})).await).len(),
        1
    );
    common::all_entries(&s, "q").await;
}

#[tokio::test]
async fn invalid_arguments() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    session(&s, "v", "alice", &["something"]).await;
    let bad = [
        json!({}),
        json!({"query": ""}),
        json!({"query": "   "}),
        json!({"query": "x".repeat(1001)}),
        json!({"query": "a\u{0}b"}),
        json!({"query": "x", "limit": 0}),
        json!({"query": "x", "limit": 101}),
        json!({"query": "x", "session_key": ""}),
        json!({"query": "x", "agent": ""}),
        json!({"query": "x", "agent": "a".repeat(101)}),
        json!({"query": "x", "sort": "date"}),
        json!({"query": "x", "session_key": "v", "sessionKey": "v"}),
    ];
    for a in bad {
        search(&s, a.clone()).await.err("VALIDATION_ERROR");
    }
    let q = format!("something {}", "y".repeat(990));
    assert_eq!(q.len(), 1000);
    search(&s, json!({"query": q, "limit": 100})).await.ok();
}

/// The migration indexes what was stored before it: take a database back to
/// the state before the search migration (SQLite 0002, PostgreSQL 0003) and
/// let the server migrate it again.
#[tokio::test]
async fn migration_backfills_existing_entries() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    session(&s, "old", "alice", &["an aardvark before search existed"]).await;
    s.close().await;

    if common::postgres_backend() {
        common::sql_execute(
            &db,
            "ALTER TABLE context_entries DROP COLUMN search; \
             DROP FUNCTION handoff_search_content(bytea); \
             DROP FUNCTION IF EXISTS handoff_search_words(text); \
             DELETE FROM _sqlx_migrations WHERE version IN (3, 5)",
        )
        .await;
    } else {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
        for stmt in [
            "DROP TRIGGER context_fts_ai",
            "DROP TRIGGER context_fts_ad",
            "DROP TRIGGER context_fts_au",
            "DROP TABLE context_fts",
            "DELETE FROM _sqlx_migrations WHERE version = 2",
        ] {
            sqlx::query(stmt).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    }

    let s = Server::start(&db, &[]).await;
    let r = results(&search(&s, json!({"query": "aardvark"})).await);
    assert_eq!(keys_seqs(&r), vec![("old".into(), 2)]);
    // And the triggers are back.
    s.call(
        "update_context",
        json!({"session_key": "old", "context_type": "message", "content": "aardvark again"}),
    )
    .await
    .ok();
    assert_eq!(
        results(&search(&s, json!({"query": "aardvark"})).await).len(),
        2
    );
}

/// U+0000 separates words (PostgreSQL stores content as bytea and indexes
/// it with NULs turned into spaces); content of the maximum size made of
/// distinct short words — more than PostgreSQL's 1 MiB tsvector limit would
/// take whole — is still accepted and found by its first words.
#[tokio::test]
async fn nul_bytes_and_huge_content() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    session(&s, "n", "alice", &["before\u{0}after\u{0}\u{0} ibis"]).await;
    for q in ["before", "after", "ibis", "before after"] {
        let r = results(&search(&s, json!({"query": q})).await);
        assert_eq!(keys_seqs(&r), vec![("n".into(), 2)], "query {q:?}");
        assert!(!r[0]["snippet"].as_str().unwrap().is_empty());
    }

    let mut huge = String::from("heron ");
    let mut i = 0u32;
    while huge.len() < (1 << 20) - 16 {
        huge.push_str(&format!("w{i:x} "));
        i += 1;
    }
    let ack = s
        .call(
            "update_context",
            json!({"session_key": "n", "context_type": "file", "content": huge}),
        )
        .await;
    assert_eq!(ack.ok()["context_entry"]["sequence_number"], 3);
    let r = results(&search(&s, json!({"query": "heron"})).await);
    assert_eq!(keys_seqs(&r), vec![("n".into(), 3)]);
    assert!(r[0]["snippet"].as_str().unwrap().contains("«heron»"));
    let r = results(&search(&s, json!({"query": "w10"})).await);
    assert_eq!(keys_seqs(&r), vec![("n".into(), 3)]);
    // The entry reads back whole.
    let all = common::all_entries(&s, "n").await;
    assert_eq!(all[1]["content"], "before\u{0}after\u{0}\u{0} ibis");
    assert_eq!(all[2]["content"].as_str().unwrap().len(), huge.len());
}
