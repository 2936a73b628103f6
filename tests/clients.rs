//! Real third-party clients against the real binary, on the configured
//! backend: the official MCP TypeScript SDK (driven by tests/ts, installed
//! from its lockfile) and the official MCP Python SDK 2.x (from PyPI, in a
//! virtualenv under target/). A missing runtime fails the test, naming it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

use common::ts::{require, target_dir};

fn ts_client_script() -> PathBuf {
    common::ts::script("client_check.mjs")
}

/// Run the TypeScript harness with `args`; returns its report. The server's
/// (stdio) or the harness's stderr goes to `log`.
fn run_ts(args: &[String], log: &Path) -> Value {
    let script = ts_client_script();
    let started = Instant::now();
    let out = Command::new("node")
        .arg(&script)
        .args(args)
        .stderr(std::fs::File::create(log).expect("stderr log"))
        .output()
        .expect("run node client_check.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let r: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("client_check.mjs printed no JSON ({e}); stdout: {stdout}\nstderr: {log}")
    });
    assert!(
        out.status.success() && r["ok"] == true,
        "client_check.mjs failed ({}): {}\nstderr: {log}",
        out.status,
        r["error"]
    );
    eprintln!(
        "TypeScript SDK {args:?}: {} acked writes, verified in {:?}",
        r["writes"]["acked"],
        started.elapsed()
    );
    r
}

/// The harness against a fresh server on stdio.
fn run_ts_client(arg_style: &str) -> Value {
    let db = common::DbDir::new();
    let args = [
        "--cmd".to_string(),
        common::BIN.to_string(),
        "--arg-style".to_string(),
        arg_style.to_string(),
        "--env".to_string(),
        format!("HANDOFF_DATABASE_URL={}", db.url()),
    ];
    run_ts(&args, &db.stderr_log())
}

fn check_ts_report(r: &Value, arg_style: &str) {
    assert_eq!(r["arg_style"], arg_style);
    assert_eq!(r["server_info"]["name"], "handoff", "{}", r["server_info"]);
    let tools: Vec<&str> = r["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "register_session",
        "update_context",
        "get_context",
        "request_handoff",
        "list_handoffs",
        "accept_handoff",
    ] {
        assert!(tools.contains(&t), "tools/list lacks {t}: {tools:?}");
    }
    assert_eq!(r["tools_without_output_schema"], json!([]));
    for reg in r["register"].as_array().unwrap() {
        assert_eq!(reg["is_error"], false, "{reg}");
        assert_eq!(reg["structured"]["success"], true, "{reg}");
    }
    // Every write acknowledged, and every acknowledgement stored once, in
    // its place, with nothing unacknowledged beside it.
    let w = &r["writes"];
    assert_eq!(
        w["acked"], w["attempted"],
        "failed writes: {}",
        w["failures"]
    );
    assert_eq!(r["text_mismatches"], 0);
    let v = &r["verification"];
    assert_eq!(v["checked"], w["acked"], "{v}");
    assert_eq!(v["found"], v["checked"], "{v}");
    for k in ["lost", "duplicated", "misordered", "unacknowledged"] {
        assert_eq!(v[k], 0, "verification.{k}: {v}");
    }
    assert!(v["pages"].as_u64().unwrap() > 4, "pages were followed: {v}");
    assert!(
        r["subscription_notice"]
            .as_str()
            .is_some_and(|u| u.starts_with("handoff://context/")),
        "no resources/updated notice: {}",
        r["subscription_notice"]
    );
    // The handoff loop, as the target agent sees it.
    let h = &r["handoff"];
    assert_eq!(
        h["request"]["structured"]["handoff"]["status"], "pending",
        "{h}"
    );
    let listed = &h["listed"]["structured"];
    assert_eq!(
        listed["handoffs"][0]["id"], h["request"]["structured"]["handoff"]["id"],
        "{h}"
    );
    assert_eq!(
        h["accepted"]["structured"]["handoff"]["status"], "accepted",
        "{h}"
    );
    assert!(r["summary"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "ts-agent"));
    // The error body of the contract.
    let e = &r["error_call"];
    assert_eq!(e["is_error"], true, "{e}");
    assert_eq!(e["structured"]["error_code"], "SESSION_NOT_FOUND", "{e}");
    assert!(e["structured"]["request_id"]
        .as_str()
        .is_some_and(|s| s.len() == 36));
}

#[test]
fn typescript_sdk_camel_case() {
    let r = run_ts_client("camel");
    check_ts_report(&r, "camel");
}

#[test]
fn typescript_sdk_snake_case() {
    let r = run_ts_client("snake");
    check_ts_report(&r, "snake");
}

/// The same client over Streamable HTTP against `serve --http`: every
/// write read back, the subscription's notice over SSE, the handoff loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_over_streamable_http() {
    let db = common::DbDir::new();
    // With an API key, as a remote client would connect.
    let d = common::daemon::Daemon::start_with_keys(&db).await;
    let key = common::daemon::create_key(&db, "acme", "agent", &[]);
    let args = vec![
        "--url".to_string(),
        d.url(),
        "--prefix".to_string(),
        "http".to_string(),
        "--header".to_string(),
        format!("Authorization: Bearer {key}"),
    ];
    let log = db.path().join("client.log");
    let r = tokio::task::spawn_blocking(move || run_ts(&args, &log))
        .await
        .unwrap();
    check_ts_report(&r, "camel");
    assert!(d.stop().await.success());
}

/// A virtualenv with the MCP Python SDK 2.x; reused when it already has
/// it. Returns its python.
fn python_sdk_venv() -> PathBuf {
    // Both Python tests may need to create it: one at a time (two
    // `venv --clear` at once fail).
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    let venv = target_dir().join("py-mcp-venv");
    let py = venv.join("bin/python");
    let works = |py: &Path| {
        Command::new(py)
            .args([
                "-c",
                "import mcp, importlib.metadata as m; assert int(m.version('mcp').split('.')[0]) >= 2",
            ])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if py.exists() && works(&py) {
        return py;
    }
    eprintln!("creating {} (once)", venv.display());
    let st = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(st.success(), "python3 -m venv failed");
    let pip = |spec: &str| {
        Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", spec])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(
        pip("mcp>=2"),
        "pip install \"mcp>=2\" (the official MCP Python SDK, from PyPI) failed in {}",
        venv.display()
    );
    assert!(
        works(&py),
        "the venv does not import mcp after installing it"
    );
    py
}

#[test]
fn python_sdk_stdio_client() {
    let db = common::DbDir::new();
    let r = run_python(common::BIN, &db.url(), "py-session");
    check_python_report(&r, "py-session");
}

/// The Python SDK 2.x over Streamable HTTP: it negotiates 2026-07-28, so
/// every request is a stateless exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_streamable_http() {
    let db = common::DbDir::new();
    let d = common::daemon::Daemon::start(&db, &[]).await;
    let url = d.url();
    let r = tokio::task::spawn_blocking(move || run_python(&url, "-", "py-http"))
        .await
        .unwrap();
    check_python_report(&r, "py-http");
    assert!(d.stop().await.success());
}

/// Run tests/python/client_check.py on `target` (a binary, or an HTTP URL)
/// and return its report.
fn run_python(target: &str, url: &str, key: &str) -> Value {
    require(
        "python3",
        "install Python 3.10 or newer with venv (e.g. apt install python3 python3-venv)",
    );
    let py = python_sdk_venv();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_check.py");
    let started = Instant::now();
    let out = Command::new(&py)
        .arg(&script)
        .arg(target)
        .arg(url)
        .arg(key)
        .output()
        .expect("run client_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("client_check.py printed no JSON ({e}); stdout: {stdout}\nstderr: {stderr}")
    });
    assert!(
        out.status.success() && r["ok"] == true,
        "client_check.py failed: {} {}\n{}\nstderr: {stderr}",
        r["error"],
        out.status,
        r["traceback"].as_str().unwrap_or("")
    );
    eprintln!(
        "Python SDK {} negotiated {} in {:?}",
        r["sdk_version"],
        r["protocol_version"],
        started.elapsed()
    );
    r
}

fn check_python_report(r: &Value, key: &str) {
    let sdk = r["sdk_version"].as_str().unwrap().to_string();
    // The SDK 2.x client probes the newest revision first, and the server
    // speaks it.
    assert!(sdk.starts_with("2."), "Python SDK {sdk} is not 2.x");
    assert_eq!(r["protocol_version"], "2026-07-28", "SDK {sdk}");
    assert_eq!(r["server_name"], "handoff");
    for t in [
        "register_session",
        "update_context",
        "request_handoff",
        "get_context",
    ] {
        assert!(
            r["tools"].as_array().unwrap().iter().any(|x| x == t),
            "tools/list lacks {t}: {}",
            r["tools"]
        );
    }

    // Every tool result: text content == structuredContent, success.
    let calls = &r["calls"];
    let mut all = vec![&calls["register"], &calls["handoff"]];
    all.extend(calls["appends"].as_array().unwrap());
    for c in &all {
        assert_eq!(c["is_error"], false, "{c}");
        assert_eq!(c["structured"], c["text"], "{c}");
        assert_eq!(c["structured"]["success"], true, "{c}");
    }
    assert_eq!(
        calls["register"]["structured"]["session"]["session_key"],
        key
    );
    let seqs: Vec<i64> = calls["appends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["structured"]["context_entry"]["sequence_number"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);

    // handoff://context/<key>: the registration entry, then ours, in order.
    let ctx = &r["context"];
    assert_eq!(ctx["session_key"], key);
    assert_eq!(ctx["has_more"], false);
    let entries = ctx["entries"].as_array().unwrap();
    let got: Vec<(i64, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["sequence_number"].as_i64().unwrap(),
                e["context_type"].as_str().unwrap(),
                e["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "system", "Session registered by agent py-agent"),
            (2, "message", "py entry 1"),
            (3, "tool_call", "py entry 2"),
            (4, "file", "py entry 3"),
        ]
    );
    assert_eq!(entries[2]["metadata"], json!({"via": "camelCase"}));

    // handoff://summary/<key>.
    let sm = &r["summary"];
    assert_eq!(sm["session_key"], key);
    assert_eq!(sm["total_entries"], 4, "{sm}");
    assert_eq!(
        sm["entry_counts"],
        json!({"system": 1, "message": 1, "tool_call": 1, "file": 1}),
        "{sm}"
    );
    assert_eq!(sm["participants"], json!(["py-agent"]));

    // request_handoff: pending, addressed right, summary counts its own entry.
    let h = &calls["handoff"]["structured"]["handoff"];
    assert_eq!(h["status"], "pending", "{h}");
    assert_eq!(h["session_key"], key);
    assert_eq!(h["source_agent"], "py-agent");
    assert_eq!(h["target_agent"], "py-target");
    assert_eq!(h["request_type"], "context_transfer");
    assert_eq!(h["context_summary"]["total_entries"], 5, "{h}");
    assert!(calls["handoff"]["structured"]["instructions"]["next_steps"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
}
