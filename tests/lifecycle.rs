//! Session actor lifecycle: passivation after idle and reactivation from
//! the database, and supervision containing a session actor's panic.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{all_entries, assert_gap_free, health_component, prometheus_value, DbDir, Server};
use serde_json::{json, Value};

async fn register(s: &Server, key: &str, agent: &str) {
    s.call(
        "register_session",
        json!({"session_key": key, "agent_from": agent}),
    )
    .await
    .ok();
}

async fn append_typed(s: &Server, key: &str, ty: &str, content: &str) -> i64 {
    s.call(
        "update_context",
        json!({"session_key": key, "context_type": ty, "content": content}),
    )
    .await
    .ok()["context_entry"]["sequence_number"]
        .as_i64()
        .expect("sequence_number")
}

async fn live_session_actors(s: &Server) -> i64 {
    let c = health_component(s, "actor.sessions").await;
    c["details"]["live_session_actors"]
        .as_i64()
        .unwrap_or_else(|| panic!("actor.sessions without a numeric live_session_actors: {c}"))
}

/// Poll health until at most `cap` session actors are live (max 5 s);
/// returns how many are.
async fn wait_live_at_most(s: &Server, cap: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live = live_session_actors(s).await;
        if live <= cap {
            return live;
        }
        assert!(
            Instant::now() < deadline,
            "still {live} live session actors (cap {cap})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll health until no session actor is live (max 5 s); returns how long it took.
async fn wait_passivated(s: &Server) -> Duration {
    let started = Instant::now();
    loop {
        let live = live_session_actors(s).await;
        if live == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "session actors still live after 5 s with HANDOFF_SESSION_IDLE=300ms: {live}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn summary(s: &Server, key: &str) -> Value {
    s.read(&format!("handoff://summary/{key}"))
        .await
        .expect("summary")
}

async fn restarts_total(s: &Server) -> f64 {
    let text = s.read_text("handoff://metrics").await.expect("metrics");
    prometheus_value(
        &text,
        "handoff_actor_restarts_total",
        &[("kind", "session")],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivation_and_reactivation() {
    let db = DbDir::new();
    let s = Server::start(&db, &[("HANDOFF_SESSION_IDLE", "300ms")]).await;
    let key = "sleepy";
    register(&s, key, "agent-a").await;
    assert_eq!(append_typed(&s, key, "message", "m1").await, 2);
    assert_eq!(append_typed(&s, key, "file", "f1").await, 3);
    assert_eq!(append_typed(&s, key, "tool_call", "t1").await, 4);
    assert!(
        live_session_actors(&s).await > 0,
        "no live session actor after writes"
    );

    let took = wait_passivated(&s).await;
    eprintln!("passivated after {took:?}");

    // Reactivation by a write: the sequence continues, nothing is reset.
    assert_eq!(append_typed(&s, key, "message", "m2").await, 5);
    assert!(live_session_actors(&s).await > 0);
    let sm = summary(&s, key).await;
    assert_eq!(sm["total_entries"], 5, "{sm}");
    assert_eq!(sm["last_sequence"], 5, "{sm}");
    assert_eq!(
        sm["entry_counts"],
        json!({"system": 1, "message": 2, "file": 1, "tool_call": 1}),
        "{sm}"
    );
    assert_eq!(sm["participants"], json!(["agent-a"]));

    // Second cycle, woken by a read this time (the summary resource), then
    // by a batch.
    wait_passivated(&s).await;
    let sm = summary(&s, key).await;
    assert_eq!(sm["total_entries"], 5, "after a second passivation: {sm}");
    assert_eq!(sm["entry_counts"]["message"], 2, "{sm}");
    wait_passivated(&s).await;
    let r = s
        .call(
            "update_context",
            json!({"session_key": key, "entries": [
                {"context_type": "message", "content": "b1"},
                {"context_type": "system", "content": "b2"}]}),
        )
        .await;
    let seqs: Vec<i64> = r.ok()["context_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence_number"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![6, 7]);
    let sm = summary(&s, key).await;
    assert_eq!(sm["total_entries"], 7, "{sm}");
    assert_eq!(
        sm["entry_counts"],
        json!({"system": 2, "message": 3, "file": 1, "tool_call": 1}),
        "{sm}"
    );

    // The session itself never went dormant (that takes days), and the
    // stored context is complete and in order.
    let entries = all_entries(&s, key).await;
    assert_gap_free(key, &entries);
    let contents: Vec<&str> = entries
        .iter()
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        &contents[1..],
        &["m1", "f1", "t1", "m2", "b1", "b2"],
        "{entries:?}"
    );
    assert_eq!(sm["status"], "active");

    // Many sessions passivate too, and each comes back whole.
    for n in 0..20 {
        let k = format!("many-{n}");
        register(&s, &k, "agent-b").await;
        append_typed(&s, &k, "message", "x").await;
    }
    wait_passivated(&s).await;
    for n in 0..20 {
        let k = format!("many-{n}");
        assert_eq!(append_typed(&s, &k, "message", "y").await, 3, "{k}");
        assert_eq!(summary(&s, &k).await["total_entries"], 3, "{k}");
    }
    assert!(s.close().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_actor_panic_is_contained() {
    let db = DbDir::new();
    let s = Server::start(&db, &[("HANDOFF_TEST_HOOKS", "true")]).await;
    register(&s, "A", "agent-a").await;
    register(&s, "B", "agent-b").await;
    for i in 0..3 {
        append_typed(&s, "A", "message", &format!("a{i}")).await;
        append_typed(&s, "B", "message", &format!("b{i}")).await;
    }
    let before = restarts_total(&s).await;
    let panics = |t: &str| prometheus_value(t, "handoff_panics_total", &[]).unwrap();
    let panics_before = panics(&s.read_text("handoff://metrics").await.unwrap());

    let r = s
        .call("debug_crash_session", json!({"session_key": "A"}))
        .await;
    r.err("INTERNAL_ERROR");
    // The crash is a panic in the actor's handler, counted as one.
    assert_eq!(
        panics(&s.read_text("handoff://metrics").await.unwrap()),
        panics_before + 1.0
    );

    // Both sessions go on where they were.
    assert_eq!(append_typed(&s, "A", "message", "a3").await, 5);
    assert_eq!(append_typed(&s, "B", "message", "b3").await, 5);
    for key in ["A", "B"] {
        let entries = all_entries(&s, key).await;
        assert_eq!(entries.len(), 5, "{key}");
        assert_gap_free(key, &entries);
        let p = key.to_lowercase();
        for i in 0..4 {
            assert_eq!(entries[i + 1]["content"], format!("{p}{i}"), "{key}");
        }
        let sm = summary(&s, key).await;
        assert_eq!(sm["total_entries"], 5, "{key}: {sm}");
    }

    let h = s.read("handoff://health").await.unwrap();
    assert_eq!(h["status"], "ok", "{h}");
    let sessions = health_component(&s, "actor.sessions").await;
    assert_eq!(sessions["status"], "ok", "{sessions}");
    let after = restarts_total(&s).await;
    assert!(
        after >= before + 1.0 && after >= 1.0,
        "handoff_actor_restarts_total{{kind=\"session\"}} went {before} -> {after}"
    );
    assert!(s.close().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_while_another_session_is_busy() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 40;
    let db = DbDir::new();
    let s = Arc::new(Server::start(&db, &[("HANDOFF_TEST_HOOKS", "true")]).await);
    register(&s, "A", "agent-a").await;
    register(&s, "B", "agent-b").await;

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..PER_WRITER {
                let m = format!("B-w{w}-{i:02}");
                let r = s
                    .call(
                        "update_context",
                        json!({"session_key": "B", "context_type": "message", "content": m}),
                    )
                    .await;
                assert!(
                    !r.is_error,
                    "write to B failed while A was being crashed: {}",
                    r.body
                );
                acks.push((
                    m,
                    r.body["context_entry"]["sequence_number"].as_i64().unwrap(),
                ));
            }
            acks
        }));
    }
    // Crash A repeatedly, with a write to A between crashes.
    let mut a_expected = vec!["Session registered by agent agent-a".to_string()];
    for round in 0..6 {
        s.call("debug_crash_session", json!({"session_key": "A"}))
            .await
            .err("INTERNAL_ERROR");
        let m = format!("A-{round}");
        let seq = append_typed(&s, "A", "message", &m).await;
        a_expected.push(m);
        assert_eq!(seq, a_expected.len() as i64, "A after crash {round}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut acks = Vec::new();
    for w in writers {
        acks.push(w.await.expect("writer on B"));
    }

    let b = all_entries(&s, "B").await;
    assert_eq!(b.len(), 1 + WRITERS * PER_WRITER);
    assert_gap_free("B", &b);
    for writer in &acks {
        for (m, seq) in writer {
            assert_eq!(b[(*seq - 1) as usize]["content"], m.as_str());
        }
        assert!(writer.windows(2).all(|w| w[0].1 < w[1].1));
    }
    let a = all_entries(&s, "A").await;
    assert_gap_free("A", &a);
    let a_contents: Vec<&str> = a.iter().map(|e| e["content"].as_str().unwrap()).collect();
    assert_eq!(a_contents, a_expected);
    assert!(restarts_total(&s).await >= 6.0);
    let h = s.read("handoff://health").await.unwrap();
    assert_eq!(h["status"], "ok", "{h}");

    let s = Arc::try_unwrap(s).ok().expect("writers done");
    assert!(s.close().await.success());
}

/// A write to session C and what became of it.
struct Write {
    marker: String,
    sent: Instant,
    answered: Instant,
    /// `Ok(seq)` or the error body.
    outcome: Result<i64, Value>,
}

/// 8 writers (`per_writer` writes each) hammer session C while C's actor is
/// crashed `crashes` times.
/// Returns every write (per writer, in order), the (sent, answered) times of
/// each crash call, and the server (still running).
async fn crash_scenario(
    db: &DbDir,
    crashes: usize,
    per_writer: usize,
) -> (Arc<Server>, Vec<Vec<Write>>, Vec<(Instant, Instant)>) {
    const WRITERS: usize = 8;
    let s = Arc::new(Server::start(db, &[("HANDOFF_TEST_HOOKS", "true")]).await);
    register(&s, "C", "agent-c").await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..per_writer {
                let marker = format!("C-w{w}-{i:02}");
                let sent = Instant::now();
                let r = s
                    .call(
                        "update_context",
                        json!({"session_key": "C", "context_type": "message", "content": marker}),
                    )
                    .await;
                let answered = Instant::now();
                let outcome = if r.is_error {
                    r.err("INTERNAL_ERROR");
                    Err(r.body.clone())
                } else {
                    Ok(r.body["context_entry"]["sequence_number"].as_i64().unwrap())
                };
                out.push(Write {
                    marker,
                    sent,
                    answered,
                    outcome,
                });
            }
            out
        }));
    }
    let mut crash_times = Vec::new();
    for _ in 0..crashes {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let sent = Instant::now();
        s.call("debug_crash_session", json!({"session_key": "C"}))
            .await
            .err("INTERNAL_ERROR");
        crash_times.push((sent, Instant::now()));
    }
    let mut writes = Vec::new();
    for w in writers {
        writes.push(w.await.expect("writer"));
    }
    (s, writes, crash_times)
}

/// The crash hits the session that is being written to: calls whose reply
/// was lost may fail (INTERNAL_ERROR), but every acknowledged entry is
/// stored at its acknowledged sequence number, a failed call stored nothing
/// ("a failed call changes nothing"), the sequence stays gap-free, and the
/// session takes writes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_while_the_same_session_is_busy_loses_nothing() {
    // Whether a crash catches a write in flight is up to timing: repeat on a
    // fresh database until one did, so the "failed call stored nothing"
    // checks below have run on at least one failed call.
    let mut hit = 0;
    for attempt in 1..=5 {
        hit += crash_round().await;
        if hit > 0 {
            eprintln!("a crash caught writes in flight on attempt {attempt}");
            break;
        }
    }
    assert!(hit > 0, "no crash caught a write in flight in 5 rounds");
}

/// One round of the crash scenario with every check; returns how many
/// calls failed because of a crash.
async fn crash_round() -> usize {
    let db = DbDir::new();
    let (s, writes, _) = crash_scenario(&db, 5, 40).await;
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for writer in &writes {
        let seqs: Vec<i64> = writer
            .iter()
            .filter_map(|w| w.outcome.clone().ok())
            .collect();
        assert!(
            seqs.windows(2).all(|p| p[0] < p[1]),
            "per-writer ack order: {seqs:?}"
        );
        for w in writer {
            match &w.outcome {
                Ok(seq) => acked.push((w.marker.clone(), *seq)),
                Err(_) => failed.push(w.marker.clone()),
            }
        }
    }
    eprintln!(
        "{} acked, {} failed around the crashes",
        acked.len(),
        failed.len()
    );

    let c = all_entries(&s, "C").await;
    assert_gap_free("C", &c);
    for (m, seq) in &acked {
        let at = c.get((*seq - 1) as usize).map(|e| e["content"].clone());
        assert_eq!(at, Some(json!(m)), "{m} acknowledged at seq {seq}");
    }
    for m in &failed {
        assert!(
            !c.iter().any(|e| e["content"] == m.as_str()),
            "{m} was reported failed (INTERNAL_ERROR) but is stored"
        );
    }
    assert_eq!(
        c.len(),
        1 + acked.len(),
        "stored entries beyond the acknowledged ones"
    );
    // The session takes writes again afterwards, continuing the sequence.
    assert_eq!(
        append_typed(&s, "C", "message", "after").await,
        c.len() as i64 + 1
    );
    assert_eq!(summary(&s, "C").await["total_entries"], c.len() + 1);

    let s = Arc::try_unwrap(s).ok().expect("writers done");
    assert!(s.close().await.success());
    failed.len()
}

/// Only calls that were at the actor when it crashed may fail: a write sent
/// after the crash call had returned, and answered before the next crash
/// call was sent, must succeed ("both sessions still work").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_after_a_crash_succeed_while_the_session_is_busy() {
    let db = DbDir::new();
    let (s, writes, crashes) = crash_scenario(&db, 10, 40).await;
    let mut spurious = Vec::new();
    let mut in_window = 0;
    for w in writes.iter().flatten() {
        // Between crash i's answer and crash i+1's request (or the end).
        let clear = crashes.iter().enumerate().any(|(i, (_, done))| {
            w.sent > *done
                && crashes
                    .get(i + 1)
                    .is_none_or(|(next, _)| w.answered < *next)
        });
        if !clear {
            continue;
        }
        in_window += 1;
        if let Err(body) = &w.outcome {
            spurious.push(format!(
                "{}: {} {}",
                w.marker, body["error"], body["details"]
            ));
        }
    }
    eprintln!("{in_window} writes fell entirely between crashes");
    assert!(
        in_window > 0,
        "no write fell between two crashes; the test proves nothing"
    );
    assert!(
        spurious.is_empty(),
        "{} of {in_window} writes sent after a crash had completed (and answered before the next) failed:\n{}",
        spurious.len(),
        spurious.join("\n")
    );
    let s = Arc::try_unwrap(s).ok().expect("writers done");
    assert!(s.close().await.success());
}

/// Writes that arrive while a session actor is passivating (the idle window
/// is tiny, the writers pause for about as long): no write fails, none is
/// lost or renumbered, and structural changes (participants, completion)
/// survive the actor handover and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_racing_passivation() {
    const SESSIONS: usize = 6;
    const WRITES: usize = 60;
    let db = DbDir::new();
    let s = Arc::new(Server::start(&db, &[("HANDOFF_SESSION_IDLE", "15ms")]).await);
    let mut tasks = Vec::new();
    for n in 0..SESSIONS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("racy-{n}");
            register(&s, &key, "owner").await;
            // (content, seq) of every acknowledged entry, in ack order.
            let mut acked = vec![("Session registered by agent owner".to_string(), 1i64)];
            let mut rng = 0x9E37_79B9u32.wrapping_mul(n as u32 + 1);
            for i in 0..WRITES {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                tokio::time::sleep(Duration::from_millis(u64::from(rng % 30))).await;
                if i % 20 == 19 {
                    let helper = format!("helper-{i}");
                    let r = s
                        .call(
                            "request_handoff",
                            json!({"session_key": key, "target_agent": helper,
                                   "request_type": "collaboration"}),
                        )
                        .await;
                    assert!(!r.is_error, "{key}: handoff {i} failed: {}", r.body);
                    let total = r.body["handoff"]["context_summary"]["total_entries"]
                        .as_i64()
                        .unwrap();
                    acked.push((String::new(), total)); // the handoff's system entry
                    continue;
                }
                let m = format!("{key}-{i:02}");
                let r = s
                    .call(
                        "update_context",
                        json!({"session_key": key, "context_type": "message", "content": m}),
                    )
                    .await;
                assert!(!r.is_error, "{key}: write {i} failed: {}", r.body);
                acked.push((
                    m,
                    r.body["context_entry"]["sequence_number"].as_i64().unwrap(),
                ));
            }
            (key, acked)
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        sessions.push(t.await.expect("writer"));
    }
    for (key, acked) in &sessions {
        let entries = all_entries(&s, key).await;
        assert_gap_free(key, &entries);
        assert_eq!(entries.len(), acked.len(), "{key}");
        for (i, (m, seq)) in acked.iter().enumerate() {
            assert_eq!(*seq, i as i64 + 1, "{key}: ack order");
            if !m.is_empty() {
                assert_eq!(entries[i]["content"], m.as_str(), "{key}");
            } else {
                assert_eq!(entries[i]["context_type"], "system", "{key}");
            }
        }
        let sm = summary(&s, key).await;
        assert_eq!(sm["total_entries"], entries.len(), "{key}: {sm}");
        assert_eq!(
            sm["participants"],
            json!(["owner", "helper-19", "helper-39", "helper-59"]),
            "{key}: {sm}"
        );
        // Complete the session right as its actor may be passivating.
        tokio::time::sleep(Duration::from_millis(15)).await;
        let r = s
            .call(
                "request_handoff",
                json!({"session_key": key, "target_agent": "finisher", "request_type": "full_handoff"}),
            )
            .await;
        r.ok();
    }
    wait_passivated(&s).await;
    let s = Arc::try_unwrap(s).ok().expect("writers done");
    assert!(s.close().await.success());

    let s = Server::start(&db, &[("HANDOFF_SESSION_IDLE", "15ms")]).await;
    for (key, acked) in &sessions {
        let sm = summary(&s, key).await;
        assert_eq!(sm["status"], "completed", "{key}: {sm}");
        assert_eq!(sm["total_entries"], acked.len() + 1, "{key}: {sm}");
        s.call(
            "update_context",
            json!({"session_key": key, "context_type": "message", "content": "late"}),
        )
        .await
        .err("SESSION_NOT_ACTIVE");
    }
    assert!(s.close().await.success());
}

/// At most `HANDOFF_MAX_LIVE_SESSIONS` session actors live: beyond it the
/// least recently used passivate, and every session still works and continues its
/// sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_session_actors_are_capped() {
    let db = DbDir::new();
    let s = Server::start(&db, &[("HANDOFF_MAX_LIVE_SESSIONS", "5")]).await;
    for i in 0..20 {
        register(&s, &format!("cap-{i}"), "a").await;
    }
    assert_eq!(wait_live_at_most(&s, 5).await, 5, "the cap is full");
    for i in 0..20 {
        let seq = append_typed(&s, &format!("cap-{i}"), "message", "again").await;
        assert_eq!(seq, 2, "session cap-{i} continued its sequence");
    }
    // The actor past the cap is drained when the next one starts and stops
    // a moment later: wait for that, then exactly the cap is live.
    assert_eq!(wait_live_at_most(&s, 5).await, 5, "the cap is full");
    assert!(s.close().await.success());
}

/// Session actors started, whatever their state came from.
async fn session_loads(s: &Server) -> f64 {
    let text = s.read_text("handoff://metrics").await.expect("metrics");
    ["cache", "database"]
        .iter()
        .map(|source| {
            prometheus_value(&text, "handoff_session_loads_total", &[("source", source)])
                .unwrap_or(0.0)
        })
        .sum()
}

/// Under the cap, the session pushed out is one not used lately, not the
/// one started first: a session in steady use stays live (no reload) while
/// one-off sessions come and go around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_passivates_sessions_not_used_lately() {
    let db = DbDir::new();
    let s = Server::start(&db, &[("HANDOFF_MAX_LIVE_SESSIONS", "3")]).await;
    register(&s, "hot", "a").await;
    append_typed(&s, "hot", "message", "0").await;
    for i in 0..12 {
        register(&s, &format!("one-off-{i}"), "a").await;
        let before = session_loads(&s).await;
        let seq = append_typed(&s, "hot", "message", &format!("{}", i + 1)).await;
        assert_eq!(seq, i + 3, "register wrote seq 1, the first append 2");
        assert_eq!(
            session_loads(&s).await,
            before,
            "the session in use was passivated after one-off-{i} started"
        );
    }
    assert!(live_session_actors(&s).await <= 3);
    // The one-off sessions were pushed out, and continue where they were.
    let before = session_loads(&s).await;
    assert_eq!(append_typed(&s, "one-off-0", "message", "again").await, 2);
    assert!(session_loads(&s).await > before);
    assert!(s.close().await.success());
}

/// A process that has never seen a key registers it without looking it up
/// first on PostgreSQL (the batch leaves out a registration that lost).
/// Whatever the path, a fresh process must answer an existing key exactly
/// as a warm one: SESSION_EXISTS for an active session, a reactivation for
/// a dormant one, and nothing written for the refused call.
#[tokio::test]
async fn a_fresh_process_registering_known_keys_refuses_or_reactivates() {
    let db = DbDir::new();
    let first = Server::start(&db, &[]).await;
    register(&first, "taken", "alice").await;
    register(&first, "sleeper", "alice").await;
    append_typed(&first, "taken", "message", "one").await;
    assert!(first.close().await.success());
    common::sql_execute(
        &db,
        "UPDATE sessions SET status = 'dormant' WHERE session_key = 'sleeper'",
    )
    .await;

    let s = Server::start(&db, &[]).await;
    // In a crowd of new keys sharing its batch: the first time blind (on
    // PostgreSQL), the second time against the row the first one loaded.
    for round in 0..2 {
        let mut calls = Vec::new();
        for i in 0..8 {
            calls.push(s.call(
                "register_session",
                json!({"session_key": format!("new-{round}-{i}"), "agent_from": "carol"}),
            ));
        }
        let taken = s.call(
            "register_session",
            json!({"session_key": "taken", "agent_from": "bob"}),
        );
        let (taken, news) = tokio::join!(taken, futures::future::join_all(calls));
        let e = taken.err("SESSION_EXISTS");
        assert_eq!(
            e["details"]["existing_session"]["agent_from"], "alice",
            "{e}"
        );
        for r in news {
            assert_eq!(r.ok()["session"]["status"], "active");
        }
    }
    let entries = all_entries(&s, "taken").await;
    assert_eq!(
        entries.len(),
        2,
        "the refused calls wrote nothing: {entries:?}"
    );
    assert_gap_free("taken", &entries);
    assert_eq!(append_typed(&s, "taken", "message", "two").await, 3);

    let r = s
        .call(
            "register_session",
            json!({"session_key": "sleeper", "agent_from": "bob"}),
        )
        .await;
    let b = r.ok();
    assert_eq!(b["reactivated"], true, "{b}");
    assert_eq!(b["session"]["status"], "active");
    assert_eq!(b["session"]["agent_from"], "alice");
    let entries = all_entries(&s, "sleeper").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_gap_free("sleeper", &entries);
    if common::postgres_backend() {
        // "taken" (first round) and "sleeper" were tried blind and lost.
        let text = s.read_text("handoff://metrics").await.unwrap();
        let lost = prometheus_value(&text, "handoff_write_conflicts_total", &[]).unwrap_or(0.0);
        assert_eq!(lost, 2.0, "lost registrations counted");
    }
    assert!(s.close().await.success());
}
