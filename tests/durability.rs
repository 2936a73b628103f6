//! Durability: an acknowledged entry survives SIGKILL at its acknowledged
//! sequence number; sequences stay gap-free across crashes; the running
//! summary is rebuilt correctly after a crash; a graceful EOF exits 0.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{all_entries, assert_gap_free, DbDir, Server};
use serde_json::{json, Value};

const SESSIONS: usize = 8;
const WRITERS: usize = 16;

fn key(n: usize) -> String {
    format!("durable-{n}")
}

/// An acknowledged write: (session, seq, marker).
#[derive(Debug, Clone)]
struct Ack {
    session: String,
    seq: i64,
    marker: String,
}

#[derive(Default)]
struct Log {
    acked: Vec<Ack>,
    /// Markers whose call did not come back with an acknowledgement.
    unacked: Vec<(String, String)>,
    /// Tool-level errors while the server was supposed to be healthy.
    errors_while_alive: Vec<Value>,
}

/// Read every session back and check it against everything acknowledged so
/// far. Returns each session's entry count.
async fn verify(
    s: &Server,
    acked: &[Ack],
    unacked: &[(String, String)],
) -> BTreeMap<String, usize> {
    let mut by_session: HashMap<&str, Vec<&Ack>> = HashMap::new();
    for a in acked {
        by_session.entry(&a.session).or_default().push(a);
    }
    let mut counts = BTreeMap::new();
    for n in 0..SESSIONS {
        let k = key(n);
        let entries = all_entries(s, &k).await;
        assert_gap_free(&k, &entries);
        let mut at: HashMap<&str, i64> = HashMap::new();
        for e in &entries {
            let c = e["content"].as_str().expect("content");
            let seq = e["sequence_number"].as_i64().unwrap();
            if let Some(prev) = at.insert(c, seq) {
                panic!("session {k}: {c:?} stored twice, at {prev} and {seq}");
            }
        }
        for a in by_session.get(k.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
            let found = at.get(a.marker.as_str()).copied();
            assert_eq!(
                found,
                Some(a.seq),
                "session {k}: acknowledged {} at seq {}, found at {found:?} ({} entries)",
                a.marker,
                a.seq,
                entries.len()
            );
        }
        let present = unacked
            .iter()
            .filter(|(sess, m)| sess == &k && at.contains_key(m.as_str()))
            .count();
        if present > 0 {
            eprintln!("{k}: {present} unacknowledged writes are present (allowed)");
        }
        counts.insert(k, entries.len());
    }
    counts
}

/// Writers loop until the server dies; returns once they have all stopped.
fn spawn_writers(
    s: &Arc<Server>,
    log: &Arc<Mutex<Log>>,
    killed: &Arc<AtomicBool>,
    cycle: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            let log = log.clone();
            let killed = killed.clone();
            tokio::spawn(async move {
                let session = key(w % SESSIONS);
                for i in 0.. {
                    let marker = format!("c{cycle}-w{w:02}-{i:05}");
                    // Mix single appends and small batches.
                    let batch = i % 5 == 4;
                    let args = if batch {
                        json!({"session_key": session, "entries": [
                            {"context_type": "message", "content": format!("{marker}-a")},
                            {"context_type": "file", "content": format!("{marker}-b")}]})
                    } else {
                        json!({"session_key": session, "context_type": "message", "content": marker})
                    };
                    let markers: Vec<String> = if batch {
                        vec![format!("{marker}-a"), format!("{marker}-b")]
                    } else {
                        vec![marker.clone()]
                    };
                    match s.try_call("update_context", args).await {
                        Ok(r) if !r.is_error => {
                            let seqs: Vec<i64> = if batch {
                                r.body["context_entries"]
                                    .as_array()
                                    .expect("context_entries")
                                    .iter()
                                    .map(|e| e["sequence_number"].as_i64().unwrap())
                                    .collect()
                            } else {
                                vec![r.body["context_entry"]["sequence_number"].as_i64().unwrap()]
                            };
                            let mut l = log.lock().unwrap();
                            for (m, seq) in markers.into_iter().zip(seqs) {
                                l.acked.push(Ack {
                                    session: session.clone(),
                                    seq,
                                    marker: m,
                                });
                            }
                        }
                        Ok(r) => {
                            let mut l = log.lock().unwrap();
                            if !killed.load(Ordering::SeqCst) {
                                l.errors_while_alive.push(r.body.clone());
                            }
                            for m in markers {
                                l.unacked.push((session.clone(), m));
                            }
                            if killed.load(Ordering::SeqCst) {
                                return;
                            }
                        }
                        Err(_) => {
                            // Transport gone: the server was killed.
                            let mut l = log.lock().unwrap();
                            for m in markers {
                                l.unacked.push((session.clone(), m));
                            }
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_entry() {
    let db = DbDir::new();
    let log = Arc::new(Mutex::new(Log::default()));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    {
        let s = Server::start(&db, &[]).await;
        for n in 0..SESSIONS {
            let r = s
                .call(
                    "register_session",
                    json!({"session_key": key(n), "agent_from": "durable"}),
                )
                .await;
            let body = r.ok();
            assert_eq!(body["session"]["status"], "active");
        }
        assert!(s.close().await.success());
    }

    for cycle in 0..3 {
        let s = Arc::new(Server::start(&db, &[]).await);
        // What the previous crash left: complete, gap-free, and the summary
        // (rebuilt from the checkpoint plus the tail) agrees with it.
        {
            let (acked, unacked) = {
                let l = log.lock().unwrap();
                (l.acked.clone(), l.unacked.clone())
            };
            let now = verify(&s, &acked, &unacked).await;
            for (k, n) in &now {
                let before = counts.get(k).copied().unwrap_or(0);
                assert!(
                    *n >= before,
                    "{k}: {before} entries before the restart, {n} after"
                );
                let sm = s.read(&format!("handoff://summary/{k}")).await.unwrap();
                assert_eq!(sm["total_entries"], *n, "{k} after restart {cycle}: {sm}");
                assert_eq!(sm["last_sequence"], *n, "{k} after restart {cycle}: {sm}");
            }
            counts = now;
        }

        let killed = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let writers = spawn_writers(&s, &log, &killed, cycle);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let acked_before_kill = log.lock().unwrap().acked.len();
        killed.store(true, Ordering::SeqCst);
        s.sigkill_now();
        for w in writers {
            match tokio::time::timeout(Duration::from_secs(10), w).await {
                Ok(r) => r.expect("writer task"),
                Err(_) => panic!("a writer did not notice the server's death within 10 s"),
            }
        }
        let s = Arc::try_unwrap(s).ok().expect("writers gone");
        let status = s.reap().await;
        assert!(!status.success(), "SIGKILLed server exited with {status}");
        let l = log.lock().unwrap();
        assert!(
            l.errors_while_alive.is_empty(),
            "tool errors before the kill: {:?}",
            l.errors_while_alive
        );
        eprintln!(
            "cycle {cycle}: {} acks in total ({} this cycle before the kill, {:?}); {} unacknowledged",
            l.acked.len(),
            acked_before_kill,
            started.elapsed(),
            l.unacked.len()
        );
        assert!(acked_before_kill > 0);
    }

    // Final restart: everything acknowledged in all three cycles is there,
    // and writing continues the sequence.
    let s = Server::start(&db, &[]).await;
    let (acked, unacked) = {
        let l = log.lock().unwrap();
        (l.acked.clone(), l.unacked.clone())
    };
    let counts = verify(&s, &acked, &unacked).await;
    for (k, n) in &counts {
        let r = s
            .call(
                "update_context",
                json!({"session_key": k, "context_type": "message", "content": "final"}),
            )
            .await;
        assert_eq!(
            r.ok()["context_entry"]["sequence_number"],
            *n as i64 + 1,
            "{k}"
        );
    }
    assert!(s.close().await.success());
}

/// After a SIGKILL the summary a handoff carries counts exactly what is
/// stored (it is rebuilt from the checkpoint and the entries after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_summary_rebuilt_after_crash() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    // Long enough to pass at least one checkpoint (every 64 entries) and
    // leave a tail after it; several sessions with different lengths.
    let lengths = [3usize, 63, 64, 65, 130, 200];
    for (n, len) in lengths.iter().enumerate() {
        let k = format!("h{n}");
        s.call(
            "register_session",
            json!({"session_key": k, "agent_from": "src"}),
        )
        .await
        .ok();
        for i in 0..*len {
            let ty = ["message", "file", "tool_call"][i % 3];
            s.call(
                "update_context",
                json!({"session_key": k, "context_type": ty, "content": format!("{k}-{i}")}),
            )
            .await
            .ok();
        }
    }
    s.kill().await;

    let s = Server::start(&db, &[]).await;
    for (n, len) in lengths.iter().enumerate() {
        let k = format!("h{n}");
        let entries = all_entries(&s, &k).await;
        assert_eq!(entries.len(), 1 + len, "{k}");
        assert_gap_free(&k, &entries);
        let r = s
            .call(
                "request_handoff",
                json!({"session_key": k, "target_agent": "dst"}),
            )
            .await;
        let h = r.ok()["handoff"].clone();
        let after = all_entries(&s, &k).await;
        // The handoff appends its own system entry; the summary it carries
        // includes it.
        assert_eq!(after.len(), entries.len() + 1, "{k}");
        assert_eq!(
            h["context_summary"]["total_entries"],
            after.len(),
            "{k}: handoff summary {h}"
        );
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for e in &after {
            *counts
                .entry(e["context_type"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(
            h["context_summary"]["entry_counts"],
            json!(counts),
            "{k}: handoff summary {h}"
        );
        assert_eq!(h["status"], "pending");
    }
    // And once more through a crash right after the handoffs.
    s.kill().await;
    let s = Server::start(&db, &[]).await;
    for (n, len) in lengths.iter().enumerate() {
        let k = format!("h{n}");
        let sm = s.read(&format!("handoff://summary/{k}")).await.unwrap();
        assert_eq!(sm["total_entries"], *len as i64 + 2, "{k}: {sm}");
    }
    assert!(s.close().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_eof_exits_zero_and_keeps_everything() {
    let db = DbDir::new();
    let s = Arc::new(Server::start(&db, &[]).await);
    for n in 0..4 {
        s.call(
            "register_session",
            json!({"session_key": format!("g{n}"), "agent_from": "a"}),
        )
        .await
        .ok();
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let k = format!("g{}", w % 4);
            let mut acks = Vec::new();
            for i in 0..50 {
                let m = format!("w{w}-{i}");
                let r = s
                    .call(
                        "update_context",
                        json!({"session_key": k, "context_type": "message", "content": m}),
                    )
                    .await;
                acks.push((
                    k.clone(),
                    r.ok()["context_entry"]["sequence_number"].as_i64().unwrap(),
                    m,
                ));
            }
            acks
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let s = Arc::try_unwrap(s).ok().unwrap();
    let status = s.close().await;
    assert_eq!(status.code(), Some(0), "exit after EOF: {status}");

    let s = Server::start(&db, &[]).await;
    for n in 0..4 {
        let k = format!("g{n}");
        let entries = all_entries(&s, &k).await;
        assert_eq!(entries.len(), 1 + 100, "{k}");
        assert_gap_free(&k, &entries);
        let sm = s.read(&format!("handoff://summary/{k}")).await.unwrap();
        assert_eq!(sm["total_entries"], 101, "{k}: {sm}");
    }
    for (k, seq, m) in &acked {
        let entries = all_entries(&s, k).await;
        assert_eq!(entries[(*seq - 1) as usize]["content"], m.as_str());
    }
    assert!(s.close().await.success());
}

/// The kill -9 tests above would also pass on a machine that never crashed
/// for real, so the setting that makes "acknowledged" mean "on disk" is
/// checked on the commit connection itself: SQLite `synchronous=FULL`, and
/// PostgreSQL `synchronous_commit=on` even where the database's own default
/// says off.
#[tokio::test]
async fn the_commit_connection_is_durable() {
    let db = DbDir::new();
    let expected = if let Some(name) = db.pg_name() {
        common::sql_execute(
            &db,
            &format!("ALTER DATABASE {name} SET synchronous_commit = off"),
        )
        .await;
        // A plain connection to the database now commits asynchronously...
        let rows = common::sql_rows(&db, "SHOW synchronous_commit").await;
        assert_eq!(rows, vec![vec![Some("off".to_string())]]);
        json!({"synchronous_commit": "on"})
    } else {
        json!({"synchronous": "full"})
    };
    // ... and the server's does not.
    let s = Server::start(&db, &[]).await;
    let database = common::health_component(&s, "database").await;
    assert_eq!(database["details"]["durability"], expected, "{database}");
    assert!(s.close().await.success());
}
