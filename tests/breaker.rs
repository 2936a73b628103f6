//! The database breaker, end to end with a real failure on either backend:
//! failures count up to the threshold, the breaker opens and then answers
//! at once (retryable, saying so), health shows it, nothing unacknowledged
//! appears, and the service recovers by itself once the database is back.
//!
//! The failure: on SQLite, the server's file-size limit (RLIMIT_FSIZE,
//! lowered from outside with prlimit(2), no root needed) so that writes fail
//! with EFBIG; on PostgreSQL, a TCP proxy in front of the server that the
//! test cuts.

mod common;

use std::time::{Duration, Instant};

use common::{DbDir, Proxy, Server};
use serde_json::json;

/// How the test takes the database away and gives it back.
enum Outage {
    /// Writes past the current size of the database's files fail.
    FileSize {
        pid: i32,
        dir: std::path::PathBuf,
    },
    Network(Proxy),
}

impl Outage {
    fn begin(&self) {
        match self {
            Outage::FileSize { pid, dir } => {
                // Room for small writes (logs), none for a large entry.
                let largest = std::fs::read_dir(dir)
                    .unwrap()
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0);
                set_fsize(*pid, largest + 256 * 1024);
            }
            Outage::Network(proxy) => proxy.cut(),
        }
    }

    fn end(&self) {
        match self {
            Outage::FileSize { pid, .. } => set_fsize(*pid, libc::RLIM_INFINITY),
            Outage::Network(proxy) => proxy.restore(),
        }
    }
}

/// Set the soft RLIMIT_FSIZE of process `pid` (the hard limit stays).
fn set_fsize(pid: i32, soft: libc::rlim_t) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) with valid pointers; reads the current limits.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old) };
    assert_eq!(
        rc,
        0,
        "prlimit(get) on {pid}: {}",
        std::io::Error::last_os_error()
    );
    let new = libc::rlimit {
        rlim_cur: soft.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above; sets the soft limit only.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
    assert_eq!(
        rc,
        0,
        "prlimit(set) on {pid}: {}",
        std::io::Error::last_os_error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_breaker_opens_fails_fast_and_recovers() {
    let db = DbDir::new();
    let mut env = vec![
        ("HANDOFF_BREAKER_FAILURES", "3".to_string()),
        // Long enough that the checks below (a health read waits up to
        // db_timeout for the dead database) see it still open.
        ("HANDOFF_BREAKER_OPEN_FOR", "3s".to_string()),
        ("HANDOFF_DB_TIMEOUT", "1s".to_string()),
    ];
    let proxy = match db.pg_name() {
        Some(name) => {
            let proxy = Proxy::start(common::pg_server_addr()).await;
            env.push((
                "HANDOFF_DATABASE_URL",
                common::pg_url_via(&proxy.addr(), name),
            ));
            Some(proxy)
        }
        None => None,
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::start_with(&db, &env, |cmd| {
        // A write past RLIMIT_FSIZE raises SIGXFSZ, which kills by default;
        // ignored, the write fails with EFBIG, which is what a full disk
        // looks like to SQLite. (Dispositions set to ignore survive exec.)
        // SAFETY: signal(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    })
    .await;
    let outage = match proxy {
        Some(proxy) => Outage::Network(proxy),
        None => Outage::FileSize {
            pid: s.pid() as i32,
            dir: db.path().to_path_buf(),
        },
    };
    let update = |content: String| json!({"session_key": "b", "context_type": "message", "content": content});
    s.call(
        "register_session",
        json!({"session_key": "b", "agent_from": "a"}),
    )
    .await
    .ok();
    s.call("update_context", update("before".into())).await.ok();

    outage.begin();
    let big = "x".repeat(900 * 1024);

    // Failures count up to the threshold, each one retryable; the breaker
    // actor opens on the last report (asynchronously), and from then on a
    // call fails at once, saying so.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failures = 0;
    let body = loop {
        let started = Instant::now();
        let r = s
            .call("update_context", update(format!("{big}{failures}")))
            .await;
        let elapsed = started.elapsed();
        let body = r.err("STORAGE_UNAVAILABLE").clone();
        assert_eq!(body["retryable"], true, "{body}");
        if body["details"]["state"] == "open" {
            assert!(
                elapsed < Duration::from_millis(200),
                "open breaker must answer fast ({elapsed:?})"
            );
            break body;
        }
        failures += 1;
        assert!(Instant::now() < deadline, "breaker did not open: {body}");
    };
    assert!(
        failures >= 3,
        "opened after {failures} failures, threshold 3"
    );
    assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
    let health = s.read("handoff://health").await.unwrap();
    assert_ne!(health["status"], "ok", "{health}");
    let breaker = common::health_component(&s, "breaker.database").await;
    assert_eq!(breaker["details"]["state"], "open", "{breaker}");

    // The database comes back; after the open period a probe closes it.
    outage.end();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.call("update_context", update("after".into())).await;
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
    let breaker = common::health_component(&s, "breaker.database").await;
    assert_eq!(breaker["details"]["state"], "closed", "{breaker}");
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
}
