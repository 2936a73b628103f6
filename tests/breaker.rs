//! The database breaker, with a real failure: the database lives on a small
//! tmpfs that the test fills up, so commits fail with "database or disk is
//! full". Calls must fail fast and retryably, nothing unacknowledged may
//! appear, and the service must recover by itself once space is freed.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{DbDir, Server};
use serde_json::json;

/// A 4 MiB tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf) -> Option<Self> {
        std::fs::create_dir_all(&at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&at)
            .status()
            .ok()?
            .success();
        ok.then_some(SmallDisk(at))
    }

    /// Take all but `leave` bytes of the free space.
    fn fill(&self, leave: u64) {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.0)
            .output()
            .unwrap();
        let avail: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let size = avail.saturating_sub(leave);
        std::fs::write(self.0.join("filler"), vec![0u8; size as usize]).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn breaker_opens_fails_fast_and_recovers() {
    if common::postgres_backend() {
        eprintln!(
            "skipping: the failure is a full SQLite file system (HANDOFF_TEST_BACKEND=postgres)"
        );
        return;
    }
    let db = DbDir::new();
    let Some(disk) = SmallDisk::mount(db.path().join("small")) else {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    };
    let url = format!("sqlite://{}", disk.0.join("h.db").display());
    let s = Server::start(
        &db,
        &[
            ("HANDOFF_DATABASE_URL", url.as_str()),
            ("HANDOFF_BREAKER_FAILURES", "3"),
            ("HANDOFF_BREAKER_OPEN_FOR", "700ms"),
        ],
    )
    .await;
    s.call(
        "register_session",
        json!({"session_key": "b", "agent_from": "a"}),
    )
    .await
    .ok();
    s.call(
        "update_context",
        json!({"session_key": "b", "context_type": "message", "content": "before"}),
    )
    .await
    .ok();

    // Leave less room than one large entry needs.
    disk.fill(64 * 1024);
    let big = "x".repeat(900 * 1024);

    // Failures count up to the threshold, each one retryable.
    for i in 0..3 {
        let r = s
            .call("update_context", json!({"session_key": "b", "context_type": "message", "content": format!("{big}{i}")}))
            .await;
        let body = r.err("STORAGE_UNAVAILABLE");
        assert_eq!(body["retryable"], true);
    }

    // The breaker actor opens on the last report (asynchronously); from then
    // on calls fail at once, saying so.
    let deadline = Instant::now() + Duration::from_secs(2);
    let body = loop {
        let started = Instant::now();
        let r = s
            .call(
                "update_context",
                json!({"session_key": "b", "context_type": "message", "content": big.clone()}),
            )
            .await;
        let elapsed = started.elapsed();
        let body = r.err("STORAGE_UNAVAILABLE").clone();
        if body["details"]["state"] == "open" {
            assert!(
                elapsed < Duration::from_millis(200),
                "open breaker must answer fast ({elapsed:?})"
            );
            break body;
        }
        assert!(Instant::now() < deadline, "breaker did not open: {body}");
    };
    assert_eq!(body["retryable"], true);
    let health = s.read("handoff://health").await.unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    let breaker = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "breaker.database")
        .unwrap();
    assert_eq!(breaker["details"]["state"], "open");

    // The database comes back; after the open period a probe closes it.
    disk.free();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s
            .call(
                "update_context",
                json!({"session_key": "b", "context_type": "message", "content": "after"}),
            )
            .await;
        if !r.is_error {
            assert_eq!(
                r.body["context_entry"]["sequence_number"], 3,
                "no gap after the outage"
            );
            break;
        }
        r.err("STORAGE_UNAVAILABLE");
        assert!(Instant::now() < deadline, "the breaker never closed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = s.read("handoff://health").await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");

    // Only acknowledged writes are stored.
    let entries = common::all_entries(&s, "b").await;
    let contents: Vec<_> = entries
        .iter()
        .map(|e| e["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(contents[1..], ["before".to_string(), "after".to_string()]);
    assert!(s.close().await.success());
    drop(disk);
}
