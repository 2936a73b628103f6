//! The supervision tree in-process, on an in-memory store: ordering of
//! acknowledged writes, passivation, a session actor's restart, a child's
//! escalation to the root, and the breaker's transitions reaching the audit
//! log. Fast (no database, no binary); the package's own tests cover the
//! same paths end to end through real clients.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use handoff_actors::breaker::BreakerConfig;
use handoff_actors::model::{ContextType, NewEntry, SessionKey};
use handoff_actors::{Core, ErrorCode, HandoffError};
use support::{Memory, Options};

fn entry(content: String) -> NewEntry {
    NewEntry {
        context_type: ContextType::Message,
        content,
        metadata: None,
    }
}

async fn register(core: &Core, key: &SessionKey) -> Result<(), HandoffError> {
    core.register(key, "agent-a".into(), None).await.map(|_| ())
}

/// Poll `cond` for up to `within`.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_are_stored_once_in_order() {
    let store = Arc::new(Memory::default());
    let (core, root) = support::start(store.clone(), Options::default()).await;
    let key = SessionKey::new("t", "ordered");
    register(&core, &key).await.unwrap();

    // Eight writers at once on one session, fifty appends each.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (core, key) = (core.clone(), key.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..50 {
                    let content = format!("w{w}-{i}");
                    let a = core
                        .append(&key, vec![entry(content.clone())])
                        .await
                        .unwrap();
                    acked.push((content, a.entries[0].sequence_number));
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for w in writers {
        let mine = w.await.unwrap();
        // A writer's own appends keep their order.
        assert!(mine.windows(2).all(|p| p[0].1 < p[1].1), "{mine:?}");
        acked.extend(mine);
    }

    // Registration writes the first entry (seq 1).
    let stored = store.entries_of("t", "ordered");
    assert_eq!(stored.len(), 401, "every acknowledged append stored once");
    let seqs: Vec<i64> = stored.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=401).collect::<Vec<_>>(), "no gap, no reordering");
    for (content, seq) in acked {
        assert_eq!(stored[(seq - 1) as usize].content, content, "seq {seq}");
    }
    // Group commit: a hot session's appends ride shared transactions.
    let commits = store.commits.load(Ordering::SeqCst);
    assert!(commits < 400, "{commits} transactions for 401 writes");
    support::stop(core, root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_passivates_and_its_next_call_reloads_it() {
    let store = Arc::new(Memory::default());
    let opts = Options {
        idle: Duration::from_millis(100),
        ..Options::default()
    };
    let (core, root) = support::start(store.clone(), opts).await;
    let key = SessionKey::new("t", "idle");
    register(&core, &key).await.unwrap();
    for i in 0..3 {
        core.append(&key, vec![entry(format!("{i}"))])
            .await
            .unwrap();
    }
    let loads = store.loads.load(Ordering::SeqCst);

    tokio::time::sleep(Duration::from_millis(600)).await;
    let a = core
        .append(&key, vec![entry("after".into())])
        .await
        .unwrap();
    // 1 is the registration's entry.
    assert_eq!(a.entries[0].sequence_number, 5, "continues where it was");
    assert_eq!(
        store.loads.load(Ordering::SeqCst),
        loads + 1,
        "the passivated actor's successor loaded the session"
    );
    // Live again: no further load.
    core.append(&key, vec![entry("again".into())])
        .await
        .unwrap();
    assert_eq!(store.loads.load(Ordering::SeqCst), loads + 1);
    assert_eq!(store.entries_of("t", "idle").len(), 6);
    support::stop(core, root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_actor_that_fails_starts_again_on_the_next_call() {
    let store = Arc::new(Memory::default());
    let (core, root) = support::start(store.clone(), Options::default()).await;
    let steady = SessionKey::new("t", "steady");
    register(&core, &steady).await.unwrap();

    let victim = SessionKey::new("t", "victim");
    store.panic_on_load.store(true, Ordering::SeqCst);
    let e = register(&core, &victim).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InternalError, "{e:?}");

    // The next call starts a fresh actor; the other session never noticed.
    register(&core, &victim).await.unwrap();
    let a = core.append(&steady, vec![entry("x".into())]).await.unwrap();
    assert_eq!(a.entries[0].sequence_number, 2, "after the registration's");
    assert!(
        eventually(Duration::from_secs(3), || store
            .audit_actions()
            .contains(&"session.actor_failed".to_string()))
        .await,
        "the failure is audited: {:?}",
        store.audit_actions()
    );
    support::stop(core, root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_failing_past_its_limit_escalates_and_calls_fail_fast() {
    let store = Arc::new(Memory::default());
    let (core, mut root) = support::start(store.clone(), Options::default()).await;
    store.panic_on_commit.store(true, Ordering::SeqCst);

    // Every commit kills the persistence actor; the root restarts it up
    // to its limit (supervision::ROOT), then fails itself.
    let mut ended = false;
    for i in 0..40 {
        let _ = register(&core, &SessionKey::new("t", &format!("k{i}"))).await;
        if tokio::time::timeout(Duration::from_millis(50), &mut root)
            .await
            .is_ok()
        {
            ended = true;
            break;
        }
    }
    assert!(ended, "the root gave up after repeated failures");
    // Nothing hangs on the dead tree.
    let started = Instant::now();
    let e = register(&core, &SessionKey::new("t", "after"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_failing_store_and_its_transitions_are_audited() {
    let store = Arc::new(Memory::default());
    let opts = Options {
        breaker: BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_millis(200),
        },
        ..Options::default()
    };
    let (core, root) = support::start(store.clone(), opts).await;
    store.sessions_unavailable.store(true, Ordering::SeqCst);

    // Failures until calls are refused at the door, fast.
    let mut refused_fast = false;
    for i in 0..50 {
        let e = register(&core, &SessionKey::new("t", &format!("down{i}")))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::StorageUnavailable, "{e:?}");
        if e.details.get("state").and_then(|s| s.as_str()) == Some("open") {
            refused_fast = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused_fast, "the breaker opened");

    // The store recovers: a probe after the open period closes it.
    store.sessions_unavailable.store(false, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match register(&core, &SessionKey::new("t", "back")).await {
            Ok(()) => break,
            Err(e) if Instant::now() < until => {
                assert_eq!(e.code, ErrorCode::StorageUnavailable, "{e:?}")
            }
            Err(e) => panic!("the breaker never let a probe through: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Published on the breaker's port, recorded by the audit actor.
    let transitions = || {
        store
            .audit
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.action == "breaker.transition")
            .map(|r| {
                let d: serde_json::Value = serde_json::from_str(&r.details).unwrap();
                format!(
                    "{}>{}",
                    d["from"].as_str().unwrap(),
                    d["to"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    let expected = ["closed>open", "open>half_open", "half_open>closed"];
    assert!(
        eventually(Duration::from_secs(5), || transitions() == expected).await,
        "{:?}",
        transitions()
    );
    support::stop(core, root).await;
}
