//! Concurrent writers: sequence numbers stay gap-free and follow
//! acknowledgement order, batches stay contiguous, and many sessions at once
//! each keep every entry.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use common::{all_entries, append, assert_gap_free, register, DbDir, Server};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

/// Position (sequence number) of every content string in a read-back;
/// panics on a duplicate.
fn index_by_content(key: &str, entries: &[Value]) -> HashMap<String, i64> {
    let mut at = HashMap::new();
    for e in entries {
        let c = e["content"].as_str().expect("content").to_string();
        let seq = e["sequence_number"].as_i64().expect("seq");
        if let Some(prev) = at.insert(c.clone(), seq) {
            panic!("session {key}: content {c:?} stored twice (seq {prev} and {seq})");
        }
    }
    at
}

/// One batch's session key and its (marker, sequence number) acks.
type BatchAcks = (String, Vec<(String, i64)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_writers_one_session() {
    const WRITERS: usize = 64;
    const PER_WRITER: usize = 20;
    let db = DbDir::new();
    let s = Arc::new(Server::start(&db, &[]).await);
    let key = "hot-session";
    register(&s, key).await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::with_capacity(PER_WRITER);
            for i in 0..PER_WRITER {
                let marker = format!("w{w:02}-i{i:03}");
                let seq = append(&s, key, &marker).await;
                acks.push((marker, seq));
            }
            acks
        }));
    }
    let mut acks_by_writer = Vec::new();
    for t in tasks {
        acks_by_writer.push(t.await.expect("writer task"));
    }
    eprintln!(
        "{} appends by {WRITERS} writers in {:?}",
        WRITERS * PER_WRITER,
        started.elapsed()
    );

    let entries = all_entries(&s, key).await;
    let total = 1 + WRITERS * PER_WRITER;
    assert_eq!(entries.len(), total, "entries read back");
    assert_gap_free(key, &entries);
    assert_eq!(entries[0]["context_type"], "system");
    let at = index_by_content(key, &entries);

    let mut all_acked_seqs = Vec::new();
    for (w, acks) in acks_by_writer.iter().enumerate() {
        let mut last = 0;
        for (marker, seq) in acks {
            let found = *at
                .get(marker)
                .unwrap_or_else(|| panic!("acknowledged {marker} (seq {seq}) missing"));
            assert_eq!(
                found, *seq,
                "{marker}: acknowledged with seq {seq}, stored at {found}"
            );
            assert!(
                *seq > last,
                "writer {w}: {marker} got seq {seq} after an earlier ack of seq {last}"
            );
            last = *seq;
            all_acked_seqs.push(*seq);
        }
    }
    all_acked_seqs.sort_unstable();
    all_acked_seqs.dedup();
    assert_eq!(
        all_acked_seqs.len(),
        WRITERS * PER_WRITER,
        "two acks carried the same sequence number"
    );
    assert_eq!(all_acked_seqs, (2..=total as i64).collect::<Vec<_>>());

    // The running summary agrees with what is stored.
    let summary = s.read(&format!("handoff://summary/{key}")).await.unwrap();
    assert_eq!(summary["total_entries"], total);
    assert_eq!(summary["entry_counts"]["message"], WRITERS * PER_WRITER);
    assert_eq!(summary["entry_counts"]["system"], 1);

    let s = Arc::try_unwrap(s).ok().expect("all writers done");
    assert!(s.close().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_stay_contiguous() {
    const TASKS: usize = 12;
    const BATCHES: usize = 12;
    let db = DbDir::new();
    let s = Arc::new(Server::start(&db, &[]).await);
    let key = "batchy";
    register(&s, key).await;

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            // (markers of the batch, acknowledged seqs)
            let mut out: Vec<(Vec<String>, Vec<i64>)> = Vec::new();
            for b in 0..BATCHES {
                // Sizes 1..=9, different per task and batch; every third
                // call of a task is a single append among the batches.
                let size = 1 + (t * 7 + b * 5) % 9;
                if b % 3 == 2 {
                    let m = format!("t{t:02}-b{b:02}-single");
                    let seq = append(&s, key, &m).await;
                    out.push((vec![m], vec![seq]));
                    continue;
                }
                let markers: Vec<String> =
                    (0..size).map(|i| format!("t{t:02}-b{b:02}-e{i}")).collect();
                let types = ["message", "file", "tool_call", "system"];
                let entries: Vec<Value> = markers
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        json!({"context_type": types[i % 4], "content": m, "metadata": {"i": i}})
                    })
                    .collect();
                let r = s
                    .call(
                        "update_context",
                        json!({"session_key": key, "entries": entries}),
                    )
                    .await;
                let body = r.ok();
                let acked = body["context_entries"]
                    .as_array()
                    .unwrap_or_else(|| panic!("batch reply without context_entries: {body}"));
                assert_eq!(acked.len(), size, "{body}");
                let seqs: Vec<i64> = acked
                    .iter()
                    .map(|e| e["sequence_number"].as_i64().unwrap())
                    .collect();
                for (i, e) in acked.iter().enumerate() {
                    assert_eq!(e["context_type"], types[i % 4]);
                }
                out.push((markers, seqs));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let expected_total = 1 + all.iter().map(|(m, _)| m.len()).sum::<usize>();

    let entries = all_entries(&s, key).await;
    assert_eq!(entries.len(), expected_total);
    assert_gap_free(key, &entries);
    let at = index_by_content(key, &entries);
    for (markers, seqs) in &all {
        // The acknowledgement is contiguous...
        for w in seqs.windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "batch {markers:?} acked non-contiguous {seqs:?}"
            );
        }
        // ...and so is the stored batch, in the order given.
        for (m, seq) in markers.iter().zip(seqs) {
            let found = at.get(m).copied();
            assert_eq!(
                found,
                Some(*seq),
                "{m}: acked at {seq}, stored at {found:?}"
            );
            let e = &entries[(*seq - 1) as usize];
            assert_eq!(e["content"], m.as_str());
        }
    }
    // Metadata survived per entry.
    for e in &entries[1..] {
        let c = e["content"].as_str().unwrap();
        if let Some(i) = c.rsplit_once("-e").map(|(_, i)| i) {
            assert_eq!(e["metadata"]["i"], i.parse::<i64>().unwrap(), "{e}");
        }
    }
    let s = Arc::try_unwrap(s).ok().expect("tasks done");
    assert!(s.close().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_sessions_at_once() {
    const SESSIONS: usize = 200;
    const APPENDS: usize = 20;
    const TASKS: usize = 32;
    let db = DbDir::new();
    let s = Arc::new(Server::start(&db, &[]).await);
    let started = Instant::now();

    // Each task owns the sessions t, t+32, …, registers them, then appends
    // round-robin across them, so ~200 session actors are live together.
    let results: Vec<Vec<BatchAcks>> = stream::iter(0..TASKS)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let keys: Vec<String> = (t..SESSIONS)
                    .step_by(TASKS)
                    .map(|n| format!("many-{n:03}"))
                    .collect();
                for k in &keys {
                    register(&s, k).await;
                }
                let mut acks: Vec<Vec<(String, i64)>> = vec![Vec::new(); keys.len()];
                for i in 0..APPENDS {
                    for (j, k) in keys.iter().enumerate() {
                        let m = format!("{k}/{i:02}");
                        let seq = append(&s, k, &m).await;
                        acks[j].push((m, seq));
                    }
                }
                keys.into_iter().zip(acks).collect::<Vec<_>>()
            })
        })
        .buffer_unordered(TASKS)
        .map(|r| r.expect("task"))
        .collect()
        .await;
    eprintln!(
        "{SESSIONS} sessions x {APPENDS} appends with {TASKS} tasks in {:?}",
        started.elapsed()
    );

    let per_session: Vec<(String, Vec<(String, i64)>)> = results.into_iter().flatten().collect();
    assert_eq!(per_session.len(), SESSIONS);
    let checks = stream::iter(per_session)
        .map(|(key, acks)| {
            let s = s.clone();
            async move {
                let entries = all_entries(&s, &key).await;
                assert_eq!(entries.len(), 1 + APPENDS, "session {key}");
                assert_gap_free(&key, &entries);
                for (i, (m, seq)) in acks.iter().enumerate() {
                    assert_eq!(*seq, i as i64 + 2, "{m} acked at {seq}");
                    assert_eq!(entries[i + 1]["content"], m.as_str(), "session {key}");
                }
                // The running summary agrees with the stored context.
                let summary = s.read(&format!("handoff://summary/{key}")).await.unwrap();
                assert_eq!(summary["total_entries"], 1 + APPENDS, "{key}: {summary}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    checks.await;

    let s = Arc::try_unwrap(s).ok().expect("tasks done");
    assert!(s.close().await.success());
}
