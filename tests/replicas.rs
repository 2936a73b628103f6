//! Several `handoff` processes on one database (replicas behind a load
//! balancer, or two local agents on one SQLite file): sequence numbers stay
//! gap-free, unique and in acknowledgement order, a key is registered once,
//! a handoff is accepted once, and each replica sees the other's writes
//! within the configured refresh bound. Runs on both backends.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    all_entries, append, assert_gap_free, prometheus_value, register, sql_rows, DbDir, Server,
};
use serde_json::{json, Value};

const REFRESH: &str = "200ms";

/// Two replicas on one database, sharing the test Redis as production
/// replicas do (each test database has its own cache key space).
async fn replicas(db: &DbDir) -> (Arc<Server>, Arc<Server>) {
    let redis = common::redis_url();
    let env = [
        ("HANDOFF_REPLICA_REFRESH", REFRESH),
        ("HANDOFF_REDIS_URL", redis.as_str()),
    ];
    let a = Server::start(db, &env).await;
    let b = Server::start(db, &env).await;
    (Arc::new(a), Arc::new(b))
}

/// One acknowledged write: (session, writer, marker, sequence number).
type Ack = (String, usize, String, i64);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_writing_the_same_sessions_lose_and_reorder_nothing() {
    const SESSIONS: usize = 6;
    const WRITERS_PER_REPLICA: usize = 8;
    const PER_WRITER: usize = 40;
    let db = DbDir::new();
    let (a, b) = replicas(&db).await;
    let keys: Vec<String> = (0..SESSIONS).map(|i| format!("shared-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let s = if i % 2 == 0 { &a } else { &b };
        s.call(
            "register_session",
            json!({"session_key": k, "agent_from": "replica-test"}),
        )
        .await
        .ok();
    }

    let mut tasks = Vec::new();
    for w in 0..WRITERS_PER_REPLICA * 2 {
        let s = if w % 2 == 0 { a.clone() } else { b.clone() };
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks: Vec<Ack> = Vec::new();
            let mut errors = Vec::new();
            for i in 0..PER_WRITER {
                // Every writer visits every session, so both replicas keep
                // racing for the same sequence numbers.
                let key = &keys[(w + i) % keys.len()];
                let marker = format!("w{w:02}-i{i:03}");
                let r = if i % 10 == 9 {
                    s.call(
                        "request_handoff",
                        json!({"session_key": key, "target_agent": format!("agent-{w}")}),
                    )
                    .await
                } else {
                    s.call(
                        "update_context",
                        json!({"session_key": key, "context_type": "message", "content": marker}),
                    )
                    .await
                };
                if r.is_error {
                    errors.push(r.body.clone());
                    continue;
                }
                if let Some(seq) = r.body["context_entry"]["sequence_number"].as_i64() {
                    acks.push((key.clone(), w, marker, seq));
                }
            }
            (acks, errors)
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        let (a, errors) = t.await.expect("writer");
        assert!(errors.is_empty(), "writes failed: {errors:?}");
        acks.extend(a);
    }
    assert_eq!(
        acks.len(),
        WRITERS_PER_REPLICA * 2 * PER_WRITER * 9 / 10,
        "every update acknowledged"
    );

    // The race was real: at least one replica lost some and retried.
    let conflicts: f64 = [&a, &b]
        .iter()
        .map(|s| async move {
            let m = s.read_text("handoff://metrics").await.expect("metrics");
            prometheus_value(&m, "handoff_write_conflicts_total", &[]).unwrap_or(0.0)
        })
        .collect::<futures::stream::FuturesUnordered<_>>()
        .fold(0.0, |acc, x| async move { acc + x })
        .await;
    eprintln!("write conflicts retried: {conflicts}");
    assert!(
        conflicts >= 1.0,
        "no replica lost a race for a sequence number: the test raced nothing"
    );

    // Read back through each replica: every ack once, at its number, and
    // each writer's acks in its own order.
    for reader in [&a, &b] {
        let mut by_key: HashMap<&str, Vec<&Ack>> = HashMap::new();
        for ack in &acks {
            by_key.entry(&ack.0).or_default().push(ack);
        }
        for key in &keys {
            let entries = all_entries(reader, key).await;
            assert_gap_free(key, &entries);
            let at: HashMap<i64, &Value> = entries
                .iter()
                .map(|e| (e["sequence_number"].as_i64().unwrap(), e))
                .collect();
            let mine = by_key.get(key.as_str()).cloned().unwrap_or_default();
            let mut last_by_writer: HashMap<usize, i64> = HashMap::new();
            for (k, w, marker, seq) in mine {
                let e = at
                    .get(seq)
                    .unwrap_or_else(|| panic!("{k}: acked seq {seq} missing"));
                assert_eq!(
                    e["content"],
                    marker.as_str(),
                    "{k}: seq {seq} holds another entry"
                );
                let prev = last_by_writer.insert(*w, *seq).unwrap_or(0);
                assert!(*seq > prev, "{k}: writer {w} acks out of order");
            }
            let markers: Vec<&str> = entries
                .iter()
                .filter_map(|e| e["content"].as_str())
                .filter(|c| c.starts_with('w'))
                .collect();
            let unique: std::collections::HashSet<_> = markers.iter().collect();
            assert_eq!(unique.len(), markers.len(), "{key}: an entry stored twice");
        }
    }

    // Summaries agree with the stored history on both replicas within the
    // refresh bound (polled, with room for a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(5);
    for key in &keys {
        let n = all_entries(&a, key).await.len() as i64;
        for s in [&a, &b] {
            loop {
                let v = s
                    .read(&format!("handoff://summary/{key}"))
                    .await
                    .expect("summary");
                if v["last_sequence"] == n {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{key}: summary at {} behind the history ({n})",
                    v["last_sequence"]
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let a = Arc::try_unwrap(a).ok().expect("a");
    let b = Arc::try_unwrap(b).ok().expect("b");
    assert!(a.close().await.success());
    assert!(b.close().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_is_registered_once_across_replicas() {
    let db = DbDir::new();
    let (a, b) = replicas(&db).await;
    for round in 0..15 {
        let key = format!("contested-{round}");
        let args = |agent: &str| json!({"session_key": key, "agent_from": agent});
        let (ra, rb) = tokio::join!(
            a.call("register_session", args("agent-a")),
            b.call("register_session", args("agent-b"))
        );
        let won: Vec<_> = [&ra, &rb].into_iter().filter(|r| !r.is_error).collect();
        assert_eq!(won.len(), 1, "round {round}: {ra:?} / {rb:?}");
        let lost = if ra.is_error { &ra } else { &rb };
        lost.err("SESSION_EXISTS");
        let winner = won[0].body["session"]["agent_from"].clone();
        // Both replicas now agree on who owns it, and it has one
        // registration entry.
        for s in [&a, &b] {
            let entries = all_entries(s, &key).await;
            assert_eq!(entries.len(), 1, "round {round}: {entries:?}");
            let again = s.call("register_session", args("late")).await;
            let e = again.err("SESSION_EXISTS");
            assert_eq!(e["details"]["existing_session"]["agent_from"], winner);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handoff_is_accepted_once_across_replicas() {
    let db = DbDir::new();
    let (a, b) = replicas(&db).await;
    for round in 0..10 {
        let key = format!("accept-{round}");
        a.call(
            "register_session",
            json!({"session_key": key, "agent_from": "src"}),
        )
        .await
        .ok();
        // Even rounds keep the session active (the acceptance appends an
        // entry); odd rounds complete it first (no entry: only the
        // handoff's own status decides).
        let request_type = if round % 2 == 0 {
            "context_transfer"
        } else {
            "full_handoff"
        };
        let h = a
            .call(
                "request_handoff",
                json!({"session_key": key, "target_agent": "dst", "request_type": request_type}),
            )
            .await;
        let id = h.ok()["handoff"]["id"].as_str().unwrap().to_string();
        let args = json!({"handoff_id": id, "agent": "dst"});
        let (ra, rb) = tokio::join!(
            a.call("accept_handoff", args.clone()),
            b.call("accept_handoff", args.clone())
        );
        let won = [&ra, &rb].iter().filter(|r| !r.is_error).count();
        assert_eq!(won, 1, "round {round}: {ra:?} / {rb:?}");
        let lost = if ra.is_error { &ra } else { &rb };
        lost.err("VALIDATION_ERROR");
        if round % 2 == 0 {
            let entries = all_entries(&b, &key).await;
            assert_gap_free(&key, &entries);
            let accepted = entries
                .iter()
                .filter(|e| e["content"].as_str().unwrap_or("").contains("accepted by"))
                .count();
            assert_eq!(accepted, 1, "round {round}: one acceptance entry");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deletion_on_one_replica_is_final_on_the_other() {
    let db = DbDir::new();
    let (a, b) = replicas(&db).await;
    let key = "erase-me";
    a.call(
        "register_session",
        json!({"session_key": key, "agent_from": "x"}),
    )
    .await
    .ok();
    // B holds a live actor for the session with state in memory.
    b.call(
        "update_context",
        json!({"session_key": key, "context_type": "message", "content": "from b"}),
    )
    .await
    .ok();
    a.call("delete_session", json!({"session_key": key}))
        .await
        .ok();
    // B's next write must not resurrect the session or its history.
    let r = b
        .call(
            "update_context",
            json!({"session_key": key, "context_type": "message", "content": "late"}),
        )
        .await;
    r.err("SESSION_NOT_FOUND");
    for s in [&a, &b] {
        s.call("get_context", json!({"session_key": key}))
            .await
            .err("SESSION_NOT_FOUND");
    }
    // And a fresh registration on B starts again from 1.
    b.call(
        "register_session",
        json!({"session_key": key, "agent_from": "y"}),
    )
    .await
    .ok();
    let entries = all_entries(&a, key).await;
    assert_gap_free(key, &entries);
    assert_eq!(entries.len(), 1);
}

/// Deletions on one replica while the other keeps writing to the same
/// sessions: every write either lands before the deletion (and goes with
/// it) or is refused, and nothing a deleted session owned stays behind.
/// (The foreign keys with `ON DELETE CASCADE` win this race; an attempt to
/// replace them with checks in the batch statement lost it without a lock
/// taken before the deletion, and this test caught that.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletions_racing_writes_on_another_replica_leave_nothing_behind() {
    const SESSIONS: usize = 8;
    const WRITERS: usize = 8;
    let db = DbDir::new();
    let (a, b) = replicas(&db).await;
    let keys: Vec<String> = (0..SESSIONS).map(|i| format!("doomed-{i}")).collect();
    for k in &keys {
        a.call(
            "register_session",
            json!({"session_key": k, "agent_from": "x"}),
        )
        .await
        .ok();
    }
    // Writes B has acknowledged so far (the deletions wait for some).
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (b, keys, acked) = (b.clone(), keys.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let (mut stored, mut refused) = (0, 0);
            for i in 0..400 {
                let key = &keys[(w + i) % keys.len()];
                let r = if i % 5 == 4 {
                    b.call(
                        "request_handoff",
                        json!({"session_key": key, "target_agent": "t"}),
                    )
                    .await
                } else {
                    b.call(
                        "update_context",
                        json!({"session_key": key, "context_type": "message",
                               "content": format!("w{w}-{i}")}),
                    )
                    .await
                };
                if r.is_error {
                    assert_eq!(r.body["error_code"], "SESSION_NOT_FOUND", "{}", r.body);
                    refused += 1;
                } else {
                    stored += 1;
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if refused >= keys.len() * 4 {
                    break;
                }
            }
            (stored, refused)
        }));
    }
    // Let B's actors load every session and get writes in flight first:
    // wait until B has acknowledged a few writes on each session.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < 3 * SESSIONS {
        assert!(Instant::now() < deadline, "B acknowledged no writes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for k in &keys {
        a.call("delete_session", json!({"session_key": k}))
            .await
            .ok();
    }
    let (mut stored, mut refused) = (0, 0);
    for t in writers {
        let (s, r) = t.await.expect("writer task");
        stored += s;
        refused += r;
    }
    assert!(
        stored > 0 && refused > 0,
        "stored {stored}, refused {refused}"
    );
    for (table, nullable) in [
        ("context_entries", false),
        ("handoffs", false),
        ("lifecycle_events", true),
    ] {
        let guard = if nullable {
            "x.session_id IS NOT NULL AND "
        } else {
            ""
        };
        let rows = sql_rows(
            &db,
            &format!(
                "SELECT count(*) FROM {table} x WHERE {guard}NOT EXISTS \
                 (SELECT 1 FROM sessions s WHERE s.id = x.session_id)"
            ),
        )
        .await;
        assert_eq!(
            rows[0][0].as_deref(),
            Some("0"),
            "{table}: rows of deleted sessions left behind"
        );
    }
    let left = sql_rows(&db, "SELECT count(*) FROM sessions").await;
    assert_eq!(left[0][0].as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_chain_stays_intact_with_two_writers() {
    let db = DbDir::new();
    let (a, b) = replicas(&db).await;
    let mut tasks = Vec::new();
    for (n, s) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let key = format!("audit-{n}-{i}");
                s.call(
                    "register_session",
                    json!({"session_key": key, "agent_from": "auditor"}),
                )
                .await
                .ok();
                s.call(
                    "request_handoff",
                    json!({"session_key": key, "target_agent": "next"}),
                )
                .await
                .ok();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let a = Arc::try_unwrap(a).ok().expect("a");
    let b = Arc::try_unwrap(b).ok().expect("b");
    assert!(a.close().await.success());
    assert!(b.close().await.success());
    let out = std::process::Command::new(common::BIN)
        .args(["audit", "verify"])
        .env("HANDOFF_DATABASE_URL", db.url())
        .output()
        .expect("audit verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "audit verify failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 60 registrations + 60 handoffs, at least, all in one chain.
    let rows: i64 = stdout
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .max()
        .unwrap_or(0);
    let warnings: Vec<String> = std::fs::read_to_string(db.stderr_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\"") || l.contains("audit"))
        .map(str::to_string)
        .collect();
    let by_action = common::sql_rows(
        &db,
        "SELECT action, count(*) FROM audit_log GROUP BY action ORDER BY action",
    )
    .await;
    assert!(
        rows >= 120,
        "audit verify counted {rows} rows: {stdout}; by action: {by_action:?}; \
         server log: {warnings:#?}"
    );
}

use futures::StreamExt;

/// A session whose actor passivated starts again from the row this replica
/// parked in its cache, without reading the database. Writes the other
/// replica made meanwhile make that row stale: the unit loses on the
/// sequence number, reloads the stored state and is applied again, so the
/// numbers stay gap-free and in acknowledgement order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_restarted_from_the_cache_catches_up_with_the_other_replica() {
    let db = DbDir::new();
    // One live session actor at most on A: touching another session
    // passivates the previous one.
    let a = Server::start(
        &db,
        &[
            ("HANDOFF_REPLICA_REFRESH", REFRESH),
            ("HANDOFF_MAX_LIVE_SESSIONS", "1"),
        ],
    )
    .await;
    let b = Server::start(&db, &[("HANDOFF_REPLICA_REFRESH", REFRESH)]).await;
    let key = "warm";
    register(&a, key).await;
    assert_eq!(append(&a, key, "a-1").await, 2);
    passivate_by_touching(&a, "other-1").await;
    assert_eq!(append(&a, key, "a-2").await, 3, "from the parked row");
    passivate_by_touching(&a, "other-2").await;
    assert_eq!(append(&b, key, "b-1").await, 4);
    assert_eq!(append(&b, key, "b-2").await, 5);
    // A's parked row still says 3 entries.
    assert_eq!(
        append(&a, key, "a-3").await,
        6,
        "after losing to B's numbers"
    );

    let entries = all_entries(&b, key).await;
    assert_gap_free(key, &entries);
    let contents: Vec<&str> = entries
        .iter()
        .skip(1)
        .map(|e| e["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, ["a-1", "a-2", "b-1", "b-2", "a-3"]);

    let m = a.read_text("handoff://metrics").await.expect("metrics");
    let from_cache =
        prometheus_value(&m, "handoff_session_loads_total", &[("source", "cache")]).unwrap_or(0.0);
    let conflicts = prometheus_value(&m, "handoff_write_conflicts_total", &[]).unwrap_or(0.0);
    assert!(from_cache >= 2.0, "restarts from the cache: {from_cache}");
    assert!(conflicts >= 1.0, "the stale row lost a race: {conflicts}");

    // A deletion on B while A holds a parked row: A's next write must not
    // bring the session back.
    passivate_by_touching(&a, "other-3").await;
    b.call("delete_session", json!({"session_key": key}))
        .await
        .ok();
    a.call(
        "update_context",
        json!({"session_key": key, "context_type": "message", "content": "late"}),
    )
    .await
    .err("SESSION_NOT_FOUND");
    for s in [&a, &b] {
        s.call("get_context", json!({"session_key": key}))
            .await
            .err("SESSION_NOT_FOUND");
    }
}

/// Register `other` on `s` (started with `HANDOFF_MAX_LIVE_SESSIONS=1`) and
/// wait until the actor it pushed out has stopped (checkpointed and parked).
async fn passivate_by_touching(s: &Server, other: &str) {
    register(s, other).await;
    for _ in 0..100 {
        let m = s.read_text("handoff://metrics").await.expect("metrics");
        if prometheus_value(&m, "handoff_actors_live", &[("kind", "session")]) == Some(1.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the pushed-out session actor did not stop");
}

// ---- Hot sessions (issue 21): many writers on few sessions, every call
// ---- alternating between the replicas as behind a load balancer without
// ---- affinity. A contended write waits for its turn; it never fails.

/// How the writers of `hot_load` spread over replicas and sessions.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Spread {
    /// Every writer alternates replicas call by call; writer `w` writes
    /// session `w % sessions`.
    Contended,
    /// Writer `w` stays on replica `w % 2` and writes that replica's own
    /// sessions: the same load without a session shared by two replicas.
    Uncontended,
}

struct HotRun {
    acks: Vec<Ack>,
    errors: Vec<Value>,
    calls: usize,
    secs: f64,
    p99_ms: f64,
}

impl HotRun {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.secs
    }
}

/// `writers` writers, `per_writer` short `update_context` calls each, over
/// `sessions` sessions (registered first).
async fn hot_load(
    a: &Arc<Server>,
    b: &Arc<Server>,
    spread: Spread,
    sessions: usize,
    writers: usize,
    per_writer: usize,
) -> HotRun {
    let key = move |w: usize| match spread {
        Spread::Contended => format!("hot-{}", w % sessions),
        Spread::Uncontended => format!("own-{}-{}", w % 2, (w / 2) % sessions),
    };
    let keys: std::collections::BTreeSet<String> =
        (0..writers.max(2 * sessions)).map(key).collect();
    for (i, k) in keys.iter().enumerate() {
        let s = if i % 2 == 0 { a } else { b };
        register(s, k).await;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (a, b) = (a.clone(), b.clone());
        let k = key(w);
        tasks.push(tokio::spawn(async move {
            let mut acks: Vec<Ack> = Vec::new();
            let mut errors = Vec::new();
            let mut latencies = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let on_a = match spread {
                    Spread::Contended => (w + i) % 2 == 0,
                    Spread::Uncontended => w % 2 == 0,
                };
                let s = if on_a { &a } else { &b };
                let marker = format!("w{w:02}-i{i:03}");
                let t = Instant::now();
                let r = s
                    .call(
                        "update_context",
                        json!({"session_key": k, "context_type": "message", "content": marker}),
                    )
                    .await;
                latencies.push(t.elapsed());
                if r.is_error {
                    errors.push(r.body.clone());
                    continue;
                }
                let seq = r.body["context_entry"]["sequence_number"]
                    .as_i64()
                    .expect("sequence_number");
                acks.push((k.clone(), w, marker, seq));
            }
            (acks, errors, latencies)
        }));
    }
    let mut run = HotRun {
        acks: Vec::new(),
        errors: Vec::new(),
        calls: writers * per_writer,
        secs: 0.0,
        p99_ms: 0.0,
    };
    let mut latencies = Vec::new();
    for t in tasks {
        let (acks, errors, l) = t.await.expect("writer");
        run.acks.extend(acks);
        run.errors.extend(errors);
        latencies.extend(l);
    }
    run.secs = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    run.p99_ms = latencies[at].as_secs_f64() * 1000.0;
    run
}

/// No error at all; an error reply would in any case carry no database
/// message. Every acknowledgement is read back once, at its number, with
/// each writer's in its own order; both replicas see the same gap-free
/// history, and their summaries catch up with it.
async fn assert_hot_run_stored(a: &Server, b: &Server, run: &HotRun) {
    for e in &run.errors {
        let text = e.to_string();
        assert!(e["details"].get("cause").is_none(), "{text}");
        for leak in ["duplicate key", "constraint", "UNIQUE"] {
            assert!(
                !text.contains(leak),
                "a database message reached the client: {text}"
            );
        }
    }
    assert!(
        run.errors.is_empty(),
        "{} of {} calls failed, e.g. {}",
        run.errors.len(),
        run.calls,
        run.errors[0]
    );
    assert_eq!(run.acks.len(), run.calls, "every call acknowledged");
    let mut by_key: HashMap<&str, Vec<&Ack>> = HashMap::new();
    for ack in &run.acks {
        by_key.entry(&ack.0).or_default().push(ack);
    }
    for reader in [a, b] {
        for (key, mine) in &by_key {
            let entries = all_entries(reader, key).await;
            assert_gap_free(key, &entries);
            let at: HashMap<i64, &Value> = entries
                .iter()
                .map(|e| (e["sequence_number"].as_i64().unwrap(), e))
                .collect();
            let mut last_by_writer: HashMap<usize, i64> = HashMap::new();
            for (k, w, marker, seq) in mine {
                let e = at
                    .get(seq)
                    .unwrap_or_else(|| panic!("{k}: acked seq {seq} missing"));
                assert_eq!(
                    e["content"],
                    marker.as_str(),
                    "{k}: seq {seq} holds another entry"
                );
                let prev = last_by_writer.insert(*w, *seq).unwrap_or(0);
                assert!(*seq > prev, "{k}: writer {w} acks out of order");
            }
            // The registration entry and the acknowledged ones, nothing else.
            assert_eq!(entries.len(), mine.len() + 1, "{key}: entries stored");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for key in by_key.keys() {
        let n = all_entries(a, key).await.len() as i64;
        for s in [a, b] {
            loop {
                let v = s
                    .read(&format!("handoff://summary/{key}"))
                    .await
                    .expect("summary");
                if v["last_sequence"] == n {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{key}: summary at {} behind the history ({n})",
                    v["last_sequence"]
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Threads spinning on the CPU until dropped (the "compile beside it").
struct CpuBurner {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuBurner {
    fn start(threads: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for i in 0..10_000u64 {
                            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuBurner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

async fn hot_sessions(sessions: usize, writers: usize, per_writer: usize, burners: usize) {
    let db = DbDir::new();
    let (a, b) = replicas(&db).await;
    let burner = (burners > 0).then(|| CpuBurner::start(burners));
    let run = hot_load(&a, &b, Spread::Contended, sessions, writers, per_writer).await;
    drop(burner);
    eprintln!(
        "{writers} writers on {sessions} sessions, {burners} burners: {} calls in {:.2}s \
         ({:.0} calls/s, p99 {:.1} ms), {} errors",
        run.calls,
        run.secs,
        run.rate(),
        run.p99_ms,
        run.errors.len()
    );
    assert_hot_run_stored(&a, &b, &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_sessions_16_writers_on_2_sessions_across_replicas_all_succeed() {
    hot_sessions(2, 16, 200, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_sessions_with_the_cpu_busy_all_succeed() {
    hot_sessions(2, 16, 200, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_sessions_64_writers_on_1_session_all_succeed() {
    hot_sessions(1, 64, 200, 0).await;
}

/// Calls/s and p99 of the contended load (16 writers alternating replicas
/// on 2 sessions) and of the same load without shared sessions, in
/// alternating rounds. Compare builds with `HANDOFF_TEST_BIN`:
/// `HOT_BENCH_ROUNDS=3 HANDOFF_TEST_BIN=/path/to/handoff cargo test --test
/// replicas hot_sessions_bench -- --ignored --nocapture` (and
/// `HANDOFF_TEST_BACKEND=postgres`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: prints figures, asserts nothing but success"]
async fn hot_sessions_bench() {
    let rounds: usize = std::env::var("HOT_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut figures: HashMap<&str, Vec<(f64, f64, usize)>> = HashMap::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Spread::Contended, Spread::Uncontended]
        } else {
            [Spread::Uncontended, Spread::Contended]
        };
        for spread in order {
            let db = DbDir::new();
            let (a, b) = replicas(&db).await;
            let run = hot_load(&a, &b, spread, 2, 16, 200).await;
            let name = if spread == Spread::Contended {
                "contended"
            } else {
                "uncontended"
            };
            eprintln!(
                "HOTBENCH {name} round {round}: {:.0} calls/s, p99 {:.1} ms, {} errors",
                run.rate(),
                run.p99_ms,
                run.errors.len()
            );
            figures
                .entry(name)
                .or_default()
                .push((run.rate(), run.p99_ms, run.errors.len()));
        }
    }
    for (name, runs) in &figures {
        let median = |mut v: Vec<f64>| {
            v.sort_by(|x, y| x.partial_cmp(y).unwrap());
            v[v.len() / 2]
        };
        eprintln!(
            "HOTBENCH {name} median: {:.0} calls/s, p99 {:.1} ms, errors {:?}",
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()),
            runs.iter().map(|r| r.2).collect::<Vec<_>>()
        );
    }
}
