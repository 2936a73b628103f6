//! Dependencies failing under load, with real processes: a Redis the test
//! owns is stopped and started again (clients must not notice), and
//! PostgreSQL is cut off behind a TCP proxy the test controls (fast,
//! retryable errors, no call over the timeout, recovery on its own, and
//! every acknowledged write present afterwards).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    all_entries, assert_gap_free, health_component, prometheus_value, DbDir, Proxy, Server,
};
use serde_json::json;
use tokio::task::JoinHandle;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of this test's own, on its own port, without persistence.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let mut r = OwnRedis { port, child: None };
        r.up();
        r
    }
    fn up(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.down();
    }
}

/// One writer's acks (key, content, seq) and errors (body, call duration).
type WriterLog = (
    Vec<(String, String, i64)>,
    Vec<(serde_json::Value, Duration)>,
);

/// Writers appending to `keys` through `s` until `stop`; returns the acks
/// (key, content, seq) and every error body with the call's duration.
fn writers(
    s: Arc<Server>,
    keys: Vec<String>,
    n: usize,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<WriterLog>> {
    (0..n)
        .map(|w| {
            let (s, keys, stop) = (s.clone(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acks, mut errors) = (Vec::new(), Vec::new());
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = &keys[(w + i) % keys.len()];
                    let content = format!("w{w}-{i}");
                    let started = Instant::now();
                    let r = s
                        .call(
                            "update_context",
                            json!({"session_key": key, "context_type": "message", "content": content}),
                        )
                        .await;
                    if r.is_error {
                        errors.push((r.body.clone(), started.elapsed()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    } else {
                        let seq = r.body["context_entry"]["sequence_number"].as_i64().unwrap();
                        acks.push((key.clone(), content, seq));
                    }
                    i += 1;
                }
                (acks, errors)
            })
        })
        .collect()
}

/// Wait for `what` to become true (checked every 50 ms, 20 s at most).
async fn poll<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Entries stored in `keys` so far, as the summaries count them.
async fn writes_so_far(s: &Server, keys: &[String]) -> i64 {
    let mut n = 0;
    for k in keys {
        let v = s
            .read(&format!("handoff://summary/{k}"))
            .await
            .expect("summary");
        n += v["last_sequence"].as_i64().unwrap_or(0);
    }
    n
}

fn check_acks(key: &str, entries: &[serde_json::Value], acks: &[(String, String, i64)]) {
    assert_gap_free(key, entries);
    let at: HashMap<i64, &str> = entries
        .iter()
        .map(|e| {
            (
                e["sequence_number"].as_i64().unwrap(),
                e["content"].as_str().unwrap(),
            )
        })
        .collect();
    for (k, content, seq) in acks.iter().filter(|a| a.0 == key) {
        assert_eq!(
            at.get(seq).copied(),
            Some(content.as_str()),
            "{k}: ack at {seq} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_and_started_during_load_is_invisible_to_clients() {
    let mut redis = OwnRedis::start(free_port());
    let db = DbDir::new();
    let url = redis.url();
    let env = [
        ("HANDOFF_REDIS_URL", url.as_str()),
        ("HANDOFF_BREAKER_OPEN_FOR", "300ms"),
        ("HANDOFF_REPLICA_REFRESH", "200ms"),
    ];
    // A writes, B reads summaries (served from the shared cache while it
    // has no actor of its own for the session).
    let a = Arc::new(Server::start(&db, &env).await);
    let b = Arc::new(Server::start(&db, &env).await);
    let keys: Vec<String> = (0..4).map(|i| format!("cached-{i}")).collect();
    for k in &keys {
        a.call(
            "register_session",
            json!({"session_key": k, "agent_from": "w"}),
        )
        .await
        .ok();
    }
    assert_eq!(
        health_component(&a, "cache").await["details"]["backend"],
        "redis"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let write_tasks = writers(a.clone(), keys.clone(), 6, stop.clone());
    let reader = {
        let (b, keys, stop) = (b.clone(), keys.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last: HashMap<String, i64> = HashMap::new();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                for k in &keys {
                    let v = b
                        .read(&format!("handoff://summary/{k}"))
                        .await
                        .unwrap_or_else(|e| panic!("summary read failed: {e}"));
                    let seq = v["last_sequence"].as_i64().unwrap();
                    let prev = last.insert(k.clone(), seq).unwrap_or(0);
                    assert!(seq >= prev, "{k}: summary went back from {prev} to {seq}");
                    reads += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            reads
        })
    };

    // B serves summaries from the cache (polled: no fixed wait).
    poll("B serves summaries from the cache", || async {
        let m = b.read_text("handoff://metrics").await.unwrap();
        prometheus_value(
            &m,
            "handoff_cache_ops_total",
            &[("op", "get"), ("outcome", "hit")],
        )
        .unwrap_or(0.0)
            > 0.0
    })
    .await;
    redis.down();
    poll("A reports the cache degraded", || async {
        health_component(&a, "cache").await["status"] == "degraded"
    })
    .await;
    // Writes go on while Redis is away.
    let during = writes_so_far(&a, &keys).await;
    poll("writes continue without Redis", || async {
        writes_so_far(&a, &keys).await > during + 20
    })
    .await;
    redis.up();
    poll("A reports the cache healthy again", || async {
        health_component(&a, "cache").await["status"] == "ok"
    })
    .await;
    let after = writes_so_far(&a, &keys).await;
    poll("writes continue after Redis is back", || async {
        writes_so_far(&a, &keys).await > after + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);

    let mut acks = Vec::new();
    for t in write_tasks {
        let (a, errors) = t.await.unwrap();
        assert!(errors.is_empty(), "clients saw errors: {errors:?}");
        acks.extend(a);
    }
    let reads = reader.await.unwrap();
    assert!(reads > 0, "the reader made no reads");

    // The cache breaker opened while Redis was down and closed again.
    let m = a.read_text("handoff://metrics").await.unwrap();
    let opened = prometheus_value(
        &m,
        "handoff_breaker_transitions_total",
        &[("dependency", "cache"), ("to", "open")],
    );
    assert!(opened.unwrap_or(0.0) >= 1.0, "cache breaker never opened");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = health_component(&a, "breaker.cache").await;
        if c["details"]["state"] == "closed" {
            break;
        }
        assert!(Instant::now() < deadline, "cache breaker stuck: {c}");
        a.call(
            "update_context",
            json!({"session_key": keys[0], "context_type": "message", "content": "probe"}),
        )
        .await
        .ok();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for k in &keys {
        check_acks(k, &all_entries(&a, k).await, &acks);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cut_off_during_load_fails_fast_and_recovers() {
    let db = DbDir::postgres();
    let proxy = Proxy::start(common::pg_server_addr()).await;
    let url = common::pg_url_via(&proxy.addr(), db.pg_name().unwrap());
    const TIMEOUT: Duration = Duration::from_secs(1);
    let env = [
        ("HANDOFF_DATABASE_URL", url.as_str()),
        ("HANDOFF_DB_TIMEOUT", "1s"),
        ("HANDOFF_BREAKER_OPEN_FOR", "3s"),
        ("HANDOFF_BREAKER_FAILURES", "3"),
    ];
    let s = Arc::new(Server::start(&db, &env).await);
    let keys: Vec<String> = (0..4).map(|i| format!("pg-cut-{i}")).collect();
    for k in &keys {
        s.call(
            "register_session",
            json!({"session_key": k, "agent_from": "w"}),
        )
        .await
        .ok();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(s.clone(), keys.clone(), 8, stop.clone());
    let breaker =
        || async { health_component(&s, "breaker.database").await["details"]["state"].clone() };

    poll("writes under way", || async {
        writes_so_far(&s, &keys).await > 40
    })
    .await;
    proxy.cut();
    let cut_at = Instant::now();
    // The failures reach the threshold and the breaker opens.
    poll("the database breaker opens", || async {
        breaker().await == "open"
    })
    .await;
    let h = s.read("handoff://health").await.unwrap();
    assert_eq!(h["status"], "error", "health during the outage: {h}");
    // While open (3 s, long enough that no half-open probe interferes), a
    // call is refused at once, saying why, without waiting for the
    // database timeout.
    let started = Instant::now();
    let r = s
        .call(
            "update_context",
            json!({"session_key": keys[0], "context_type": "message", "content": "while-open"}),
        )
        .await;
    let open_call = started.elapsed();
    let body = r.err("STORAGE_UNAVAILABLE");
    assert_eq!(body["retryable"], true, "{body}");
    assert_eq!(body["details"]["state"], "open", "{body}");
    assert!(
        open_call < Duration::from_millis(300),
        "an open breaker answered in {open_call:?}"
    );
    proxy.restore();
    let restored_at = Instant::now();
    // Recovery on its own: a probe gets through, the breaker closes and
    // writes succeed again.
    poll("the database breaker closes", || async {
        breaker().await == "closed"
    })
    .await;
    let recovered = restored_at.elapsed();
    let after = writes_so_far(&s, &keys).await;
    poll("writes succeed after the outage", || async {
        writes_so_far(&s, &keys).await > after + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);

    let (mut acks, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, e) = t.await.unwrap();
        acks.extend(a);
        errors.extend(e);
    }
    assert!(!errors.is_empty(), "the outage was not noticed");
    let slowest = errors.iter().map(|(_, d)| *d).max().unwrap();
    let while_open: Vec<Duration> = errors
        .iter()
        .filter(|(e, _)| e["details"]["state"] == "open")
        .map(|(_, d)| *d)
        .collect();
    eprintln!(
        "outage {:?}: {} errors ({} refused by the open breaker, slowest of those {:?}), slowest failed call {slowest:?}, closed {recovered:?} after restore, {} acks",
        restored_at - cut_at,
        errors.len(),
        while_open.len(),
        while_open.iter().max(),
        acks.len()
    );
    for (e, d) in &errors {
        assert_eq!(e["error_code"], "STORAGE_UNAVAILABLE", "{e}");
        assert_eq!(e["retryable"], true, "{e}");
        assert!(
            *d <= TIMEOUT + Duration::from_millis(500),
            "a call took {d:?}: {e}"
        );
    }
    for d in &while_open {
        assert!(*d < Duration::from_millis(300), "open breaker took {d:?}");
    }
    let m = s.read_text("handoff://metrics").await.unwrap();
    for to in ["open", "closed"] {
        let n = prometheus_value(
            &m,
            "handoff_breaker_transitions_total",
            &[("dependency", "database"), ("to", to)],
        );
        assert!(
            n.unwrap_or(0.0) >= 1.0,
            "no database breaker transition to {to}: {n:?}"
        );
    }
    for k in &keys {
        check_acks(k, &all_entries(&s, k).await, &acks);
    }
}
