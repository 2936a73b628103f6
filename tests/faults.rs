//! Dependencies failing under load, with real processes: a Redis the test
//! owns is stopped and started again (clients must not notice), and
//! PostgreSQL is cut off behind a TCP proxy the test controls (fast,
//! retryable errors, no call over the timeout, recovery on its own, and
//! every acknowledged write present afterwards).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{all_entries, assert_gap_free, health_component, prometheus_value, DbDir, Server};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
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

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = b.read_text("handoff://metrics").await.unwrap();
    let hits = prometheus_value(
        &m,
        "handoff_cache_ops_total",
        &[("op", "get"), ("outcome", "hit")],
    );
    assert!(
        hits.unwrap_or(0.0) > 0.0,
        "B served summaries from the cache: {hits:?}"
    );
    redis.down();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let during = health_component(&a, "cache").await;
    assert_eq!(during["status"], "degraded", "{during}");
    redis.up();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acks = Vec::new();
    for t in write_tasks {
        let (a, errors) = t.await.unwrap();
        assert!(errors.is_empty(), "clients saw errors: {errors:?}");
        acks.extend(a);
    }
    let reads = reader.await.unwrap();
    assert!(reads > 20, "reader made {reads} reads");
    assert!(acks.len() > 100, "only {} writes in 5.5 s", acks.len());

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

/// A TCP proxy in front of PostgreSQL. `cut` drops every connection and
/// swallows new ones without answering (a dead network, not a refusal);
/// `restore` forwards again.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let (c, l) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                let c = c.clone();
                let link = tokio::spawn(async move {
                    while c.load(Ordering::Relaxed) {
                        // Hold the socket open and say nothing.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                l.lock().unwrap().push(link);
            }
        });
        Proxy { port, cut, links }
    }
    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }
    fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cut_off_during_load_fails_fast_and_recovers() {
    let db = DbDir::postgres();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        proxy.port,
        db.pg_name().unwrap()
    );
    const TIMEOUT: Duration = Duration::from_secs(1);
    let env = [
        ("HANDOFF_DATABASE_URL", url.as_str()),
        ("HANDOFF_DB_TIMEOUT", "1s"),
        ("HANDOFF_BREAKER_OPEN_FOR", "500ms"),
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

    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = s.read("handoff://health").await.unwrap();
    assert_eq!(h["status"], "error", "health during the outage: {h}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();
    let restored_at = Instant::now();
    // Recovery on its own: a write succeeds again within a few seconds.
    let recovered = loop {
        let r = s
            .call(
                "update_context",
                json!({"session_key": keys[0], "context_type": "message", "content": "after"}),
            )
            .await;
        if !r.is_error {
            break restored_at.elapsed();
        }
        assert!(
            restored_at.elapsed() < Duration::from_secs(10),
            "no recovery: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut acks, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, e) = t.await.unwrap();
        acks.extend(a);
        errors.extend(e);
    }
    assert!(!errors.is_empty(), "the outage was not noticed");
    let slowest = errors.iter().map(|(_, d)| *d).max().unwrap();
    eprintln!(
        "outage {:?}: {} errors, slowest failed call {slowest:?}, recovered {recovered:?} after restore, {} acks",
        restored_at - cut_at,
        errors.len(),
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
    for k in &keys {
        check_acks(k, &all_entries(&s, k).await, &acks);
    }
}
