//! The PostgreSQL adapter against a scratch database.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use handoff_actors::model::summary::Summary;
use handoff_actors::model::{
    rfc3339, ContextType, HandoffAccept, HandoffRow, HandoffType, SessionStatus,
};
use serde_json::json;

use super::*;
use crate::storage::{PageQuery, Sessions};

/// A fresh database on the test server, dropped with psql on drop.
struct Scratch {
    server: String,
    name: String,
}

impl Scratch {
    /// The test server (`HANDOFF_TEST_PG_URL`) is a prerequisite of
    /// the suite on either backend: these tests always run.
    async fn open() -> (Scratch, PgDb) {
        let server = std::env::var("HANDOFF_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
            .trim_end_matches('/')
            .to_string();
        let name = format!("handoff_unit_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("connect to the test PostgreSQL server");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create database");
        let scratch = Scratch { server, name };
        let db = PgDb::open(&scratch.url(), true).await.expect("open");
        (scratch, db)
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    async fn drop_now(&self) {
        let mut admin = PgConnection::connect(&format!("{}/postgres", self.server))
            .await
            .expect("connect");
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .await
            .expect("drop database");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .arg(format!("{}/postgres", self.server))
            .args(["-X", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// A time with microseconds, as the actors make them.
fn t(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_790_000_000_000_000 + micros).unwrap()
}

fn session(id: Uuid, key: &str, last_seq: i64) -> SessionRow {
    SessionRow {
        id,
        tenant: Arc::from("t"),
        session_key: Arc::from(key),
        agent_from: "agent-a".into(),
        status: SessionStatus::Active,
        metadata: Some(json!({"z": 1, "a": "nul\u{0}", "n": 1.5})),
        created_at: t(1),
        last_activity_at: t(2),
        last_seq,
        summary: Summary::with_participant("agent-a"),
    }
}

fn entry(session_id: Uuid, seq: i64, content: &str) -> EntryRow {
    EntryRow {
        session_id,
        seq,
        id: Uuid::now_v7(),
        context_type: ContextType::Message,
        content: content.into(),
        metadata: (seq % 2 == 0).then(|| json!({"seq": seq, "q": "\"\u{0}"})),
        created_at: t(100 + seq),
    }
}

/// A unit that registers `session` (a new row).
fn unit(session: Option<SessionRow>, entries: Vec<EntryRow>) -> CommitUnit {
    CommitUnit {
        session_is_new: session.is_some(),
        session,
        entries,
        ..Default::default()
    }
}

/// A unit that checkpoints an existing session row.
fn checkpoint(session: SessionRow) -> CommitUnit {
    CommitUnit {
        session: Some(session),
        ..Default::default()
    }
}

async fn tail(db: &PgDb, key: &str) -> Vec<(i64, String)> {
    let (_, tail) = db.load_session("t", key).await.unwrap().unwrap();
    tail.into_iter().map(|e| (e.seq, e.content)).collect()
}

#[tokio::test]
async fn a_batch_round_trips_exactly() {
    let (scratch, db) = Scratch::open().await;
    let id = Uuid::now_v7();
    let row = session(id, "k", 1);
    let entries: Vec<EntryRow> = ["first", "nul\u{0} \"quoted\" é 😀", "line\nbreak\\"]
        .iter()
        .enumerate()
        .map(|(i, c)| entry(id, i as i64 + 1, c))
        .collect();
    let handoff = HandoffRow {
        id: Uuid::now_v7(),
        tenant: Arc::from("t"),
        session_id: id,
        session_key: Arc::from("k"),
        source_agent: "agent-a".into(),
        target_agent: "agent-b".into(),
        request_type: HandoffType::Collaboration,
        status: "pending".into(),
        request_data: Some(json!({"instructions": "go"})),
        context_summary: json!({"total": 3}),
        context_entries: 3,
        created_at: t(7),
    };
    let audit = AuditRow {
        seq: 1,
        ts: rfc3339(&t(8)),
        tenant: "t".into(),
        action: "session.registered".into(),
        actor: Some("agent-a".into()),
        subject_hash: None,
        details: "{}".into(),
        prev_hash: "0".into(),
        hash: "h1".into(),
    };
    let mut u = unit(Some(row.clone()), entries.clone());
    u.handoffs.push(handoff.clone());
    u.audit.push(audit.clone());
    db.commit(&[&u]).await.unwrap();

    let (back, tail) = db.load_session("t", "k").await.unwrap().unwrap();
    assert_eq!(back.id, id);
    assert_eq!(back.metadata, row.metadata);
    assert_eq!(back.created_at, row.created_at);
    assert_eq!(back.last_activity_at, row.last_activity_at);
    assert_eq!(back.last_seq, 1);
    assert_eq!(back.summary.handoffs, 1, "handoffs are counted on load");
    assert_eq!(tail.len(), 2, "the entries after the checkpoint");
    for (got, want) in tail.iter().zip(&entries[1..]) {
        assert_eq!(
            (got.seq, got.id, &got.content, &got.metadata, got.created_at),
            (
                want.seq,
                want.id,
                &want.content,
                &want.metadata,
                want.created_at
            )
        );
    }
    assert_eq!(db.audit_head().await.unwrap(), Some(audit.clone()));
    assert_eq!(db.audit_rows().await.unwrap(), vec![audit]);

    let page = db
        .context_page(
            "t",
            "k",
            PageQuery {
                after: 0,
                limit: 10,
                types: None,
                max_bytes: 1 << 20,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!page.has_more);
    let want: Vec<_> = entries
        .iter()
        .map(|e| (e.id.to_string(), e.content.clone(), rfc3339(&e.created_at)))
        .collect();
    let got: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.id.clone(), e.content.clone(), e.created_at.clone()))
        .collect();
    assert_eq!(
        got, want,
        "timestamps read back as the strings SQLite keeps"
    );

    let (list, total) = db.list_sessions("t", None, 10).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(list[0].created_at, rfc3339(&row.created_at));
    let h = db
        .get_handoff("t", &handoff.id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.created_at, rfc3339(&handoff.created_at));
    assert_eq!(h.request_data, handoff.request_data);
    assert!(db
        .get_handoff("t", &handoff.id.to_string().to_uppercase())
        .await
        .unwrap()
        .is_none());

    // A later checkpoint wins; an older one never overwrites it.
    let mut newer = row.clone();
    newer.last_seq = 3;
    newer.status = SessionStatus::Completed;
    let mut older = row.clone();
    older.last_seq = 2;
    let accept = HandoffAccept {
        id: handoff.id,
        agent: "agent-b".into(),
        at: t(9),
    };
    let mut u1 = checkpoint(newer);
    u1.accepts.push(accept);
    let u2 = checkpoint(older.clone());
    db.commit(&[&u1, &u2]).await.unwrap();
    db.commit(&[&checkpoint(older)]).await.unwrap();
    let (back, _) = db.load_session("t", "k").await.unwrap().unwrap();
    assert_eq!((back.last_seq, back.status), (3, SessionStatus::Completed));
    let h = db
        .list_handoffs("t", "agent-b", Some("accepted"), None, 10)
        .await
        .unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].accepted_at, Some(rfc3339(&t(9))));
    scratch.drop_now().await;
}

#[tokio::test]
async fn a_refused_batch_leaves_nothing_and_the_next_one_commits() {
    let (scratch, db) = Scratch::open().await;
    let id = Uuid::now_v7();
    db.commit(&[&unit(Some(session(id, "k", 0)), vec![entry(id, 1, "one")])])
        .await
        .unwrap();
    // Unit A is fine, unit B repeats sequence number 1.
    let a = unit(None, vec![entry(id, 2, "two")]);
    let b = unit(None, vec![entry(id, 1, "again")]);
    match db.commit(&[&a, &b]).await {
        // A taken sequence number is a lost race (another writer).
        Err(StoreError::Conflict(m)) => assert!(m.contains("duplicate key"), "{m}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(tail(&db, "k").await, vec![(1, "one".to_string())]);
    // An entry of a session that does not exist (deleted by another
    // writer): a foreign key, also a lost race.
    let orphan = unit(None, vec![entry(Uuid::now_v7(), 1, "x")]);
    assert!(matches!(
        db.commit(&[&orphan]).await,
        Err(StoreError::Conflict(_))
    ));
    // The writer was closed after each failure; the next batch reconnects.
    db.commit(&[&a]).await.unwrap();
    assert_eq!(
        tail(&db, "k").await,
        vec![(1, "one".to_string()), (2, "two".to_string())]
    );
    scratch.drop_now().await;
}

/// Every shape of the batch statement commits, also past the first
/// executions (planned with the parameters' values, where a constant
/// failing branch would be evaluated up front) on one connection.
#[tokio::test]
async fn each_batch_shape_commits_again_and_again() {
    let (scratch, db) = Scratch::open().await;
    let id = Uuid::now_v7();
    db.commit(&[&unit(Some(session(id, "k", 0)), vec![])])
        .await
        .unwrap();
    let mut seq = 0;
    for round in 0..8 {
        let fresh = Uuid::now_v7();
        let key = format!("fresh-{round}");
        seq += 1;
        let e1 = entry(id, seq, &format!("bare {seq}"));
        seq += 1;
        let with_row = unit(None, vec![entry(id, seq, &format!("with row {seq}"))]);
        let with_row = CommitUnit {
            session: Some(session(id, "k", seq)),
            ..with_row
        };
        let shapes: [Vec<CommitUnit>; 4] = [
            vec![unit(Some(session(fresh, &key, 0)), vec![])],
            vec![unit(None, vec![e1])],
            vec![with_row],
            vec![CommitUnit {
                delete: Some(fresh),
                ..Default::default()
            }],
        ];
        for units in &shapes {
            let units: Vec<&CommitUnit> = units.iter().collect();
            db.commit(&units).await.expect("commits");
        }
    }
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM context_entries WHERE session_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&db.reader)
            .await
            .unwrap();
    assert_eq!(stored, (1..=16).collect::<Vec<i64>>());
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&db.reader)
        .await
        .unwrap();
    assert_eq!(sessions, 1, "each fresh session was deleted again");
    scratch.drop_now().await;
}

#[tokio::test]
async fn a_split_batch_is_still_one_transaction() {
    let (scratch, mut db) = Scratch::open().await;
    db.chunk_bytes = 8; // every entry in its own execution
    let id = Uuid::now_v7();
    let first: Vec<EntryRow> = (1..=5).map(|i| entry(id, i, "0123456789")).collect();
    db.commit(&[&unit(Some(session(id, "k", 0)), first)])
        .await
        .unwrap();
    assert_eq!(tail(&db, "k").await.len(), 5);
    // The duplicate comes in the last chunk: the earlier chunks roll back.
    let bad = unit(
        None,
        vec![
            entry(id, 6, "0123456789"),
            entry(id, 7, "0123456789"),
            entry(id, 3, "0123456789"),
        ],
    );
    assert!(matches!(
        db.commit(&[&bad]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(tail(&db, "k").await.len(), 5);
    let good = unit(
        None,
        vec![entry(id, 6, "0123456789"), entry(id, 7, "0123456789")],
    );
    db.commit(&[&good]).await.unwrap();
    assert_eq!(tail(&db, "k").await.len(), 7);
    scratch.drop_now().await;
}

/// The page rule of the SQLite adapter, applied to all entries.
fn reference_page(entries: &[EntryRow], q: &PageQuery<'_>) -> (Vec<i64>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    for e in entries
        .iter()
        .filter(|e| e.seq > q.after)
        .filter(|e| q.types.is_none_or(|t| t.contains(&e.context_type)))
    {
        let cost = crate::storage::encoded_cost(&e.content);
        if out.len() == q.limit as usize || (!out.is_empty() && bytes + cost > q.max_bytes) {
            return (out, true);
        }
        bytes += cost;
        out.push(e.seq);
    }
    (out, false)
}

#[tokio::test]
async fn pages_keep_the_encoded_size_budget() {
    let (scratch, db) = Scratch::open().await;
    let id = Uuid::now_v7();
    let entries: Vec<EntryRow> = (1..=40)
        .map(|i| {
            let mut e = entry(id, i, &"ab\"\n".repeat((i as usize * 7) % 23 + 1));
            if i % 3 == 0 {
                e.context_type = ContextType::File;
            }
            e
        })
        .collect();
    db.commit(&[&unit(Some(session(id, "k", 40)), entries.clone())])
        .await
        .unwrap();
    let files = [ContextType::File];
    for types in [None, Some(&files[..])] {
        for after in [0, 7] {
            for limit in [1, 3, 1000] {
                for max_bytes in [0, 1, 20, 64, 200, 1000, 100_000] {
                    let q = PageQuery {
                        after,
                        limit,
                        types,
                        max_bytes,
                    };
                    let want = reference_page(&entries, &q);
                    let page = db.context_page("t", "k", q).await.unwrap().unwrap();
                    let got: Vec<i64> = page.entries.iter().map(|e| e.sequence_number).collect();
                    assert_eq!(
                        (got, page.has_more),
                        want,
                        "after {after} limit {limit} max {max_bytes} {types:?}"
                    );
                }
            }
        }
    }
    scratch.drop_now().await;
}

#[tokio::test]
async fn a_lost_database_is_unavailable() {
    let (scratch, db) = Scratch::open().await;
    db.ping().await.unwrap();
    scratch.drop_now().await; // terminates our connections too
    let id = Uuid::now_v7();
    let r = db.commit(&[&unit(Some(session(id, "k", 0)), vec![])]).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(matches!(db.ping().await, Err(StoreError::Unavailable(_))));
}

/// The search words travel in tsvector's binary form: PostgreSQL must
/// read back exactly the vector that its own text input gives for the
/// same words (sorted lexemes, positions, limits), with no error.
#[tokio::test]
async fn binary_search_words_are_the_vectors_text_input_gives() {
    let (scratch, db) = Scratch::open().await;
    let texts = [
        String::new(),
        "Fix src/auth.ts: auth TOKEN, then auth again".to_string(),
        "Ünïcødé 東京 zebra Zebra apple ÄPFEL 10 9 a1 1a".to_string(),
        "w ".repeat(20_000),
        format!("{}z z tail", "y ".repeat(17_000)),
        format!("a {} b", "x".repeat(3000)),
    ];
    for text in &texts {
        let v = crate::storage::search_words::tsvector(text);
        let row = sqlx::query(
            "SELECT $1::tsvector::text AS bin, $2::tsvector::text AS txt, \
                    $1::tsvector = $2::tsvector AS same",
        )
        .bind(&v)
        .bind(v.to_text())
        .fetch_one(&db.reader)
        .await
        .expect("PostgreSQL reads the binary form");
        let (bin, txt): (String, String) = (row.get("bin"), row.get("txt"));
        assert!(
            row.get::<bool, _>("same"),
            "{text:.40}: {bin:.200} vs {txt:.200}"
        );
        assert_eq!(bin, txt, "{text:.40}");
        assert_eq!(bin, v.to_text(), "{text:.40}");
    }
    scratch.drop_now().await;
}

#[tokio::test]
async fn tenants_see_only_their_own_rows() {
    let (scratch, db) = Scratch::open().await;
    crate::storage::analytics::isolation::check(&db).await;
    scratch.drop_now().await;
}

#[test]
fn tls_only_when_the_url_names_an_ssl_mode() {
    assert!(!asks_for_ssl_mode("postgres://u@h/db"));
    assert!(!asks_for_ssl_mode("postgres://u@h/db?application_name=x"));
    assert!(asks_for_ssl_mode("postgres://u@h/db?sslmode=require"));
    assert!(asks_for_ssl_mode(
        "postgres://u@h/db?a=b&SSLMODE=verify-full"
    ));
    assert!(asks_for_ssl_mode("postgres://u@h/db?ssl-mode=prefer"));
}

#[test]
fn descriptions_never_show_a_password() {
    for url in [
        "postgres://app:s3cret@db.example:6543/handoff",
        "postgresql://app@db.example:6543/handoff?password=s3cret",
    ] {
        let d = describe_opts(&PgConnectOptions::from_str(url).unwrap());
        assert_eq!(d, "postgres://app@db.example:6543/handoff");
    }
}
