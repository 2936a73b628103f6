//! Real third-party clients against the real binary: the official MCP
//! TypeScript SDK (through the mcp-load driver) and the official MCP Python
//! SDK 2.x. Each test is skipped, with a message on stderr, only when its
//! runtime (`node` / `python3`) is not installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// The mcp-load script, with its dependencies installed. `shared/` may be
/// read-only (as in CI): then the driver is copied under target/ and
/// installed there.
fn mcp_load_script() -> Option<PathBuf> {
    // Both TypeScript tests may need the install: one at a time.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let script = match std::env::var_os("HANDOFF_MCP_LOAD") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/mcp-load/mcp-load.mjs"),
    };
    if !script.is_file() {
        eprintln!(
            "skipping: mcp-load driver not found at {} (set HANDOFF_MCP_LOAD)",
            script.display()
        );
        return None;
    }
    let dir = script.parent().unwrap().to_path_buf();
    if dir.join("node_modules/@modelcontextprotocol/sdk").is_dir() {
        return Some(script);
    }
    let copy = target_dir().join("mcp-load");
    std::fs::create_dir_all(&copy).expect("mkdir target/mcp-load");
    for f in ["mcp-load.mjs", "package.json", "package-lock.json"] {
        if dir.join(f).exists() {
            std::fs::copy(dir.join(f), copy.join(f)).expect("copy mcp-load");
        }
    }
    if !copy.join("node_modules/@modelcontextprotocol/sdk").is_dir() {
        let verb = if copy.join("package-lock.json").exists() {
            "ci"
        } else {
            "install"
        };
        eprintln!(
            "installing mcp-load's dependencies: npm {verb} in {}",
            copy.display()
        );
        let out = Command::new("npm")
            .arg(verb)
            .arg("--no-audit")
            .arg("--no-fund")
            .current_dir(&copy)
            .output()
            .expect("run npm");
        assert!(
            out.status.success(),
            "npm {verb} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(copy.join("mcp-load.mjs"))
}

fn run_mcp_load(arg_style: &str) {
    if !have("node") {
        eprintln!("SKIPPED: `node` is not installed; the TypeScript SDK client test needs it");
        return;
    }
    let Some(script) = mcp_load_script() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report.json");
    let server_log = tmp.path().join("server.log");
    let started = Instant::now();
    let out = Command::new("node")
        // The driver hands its whole environment to the server, and the
        // server refuses unknown HANDOFF_* variables: keep ours out.
        .env_remove("HANDOFF_MCP_LOAD")
        .arg(&script)
        .arg("--cmd")
        .arg(format!("{} serve", common::BIN))
        .arg("--env")
        .arg(format!(
            "HANDOFF_DATABASE_URL=sqlite://{}",
            tmp.path().join("h.db").display()
        ))
        .args(["--concurrency", "8", "--duration", "3", "--sessions", "20"])
        .args(["--verify-sample", "0", "--json", "--arg-style", arg_style])
        .arg("--out")
        .arg(&report)
        .arg("--server-log")
        .arg(&server_log)
        .output()
        .expect("run node mcp-load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mcp-load exited with {}: {stderr}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("report is JSON");
    eprintln!(
        "mcp-load --arg-style {arg_style}: {} calls ({} calls/s), {:?} wall",
        r["mixed"]["calls"],
        r["mixed"]["calls_per_s"],
        started.elapsed()
    );
    let ctx = || {
        format!(
            "report: setup={} mixed.errors={} verification={} noise={}\ndriver stderr: {stderr}",
            r["setup"], r["mixed"]["errors"], r["verification"], r["noise"]
        )
    };
    assert_eq!(r["params"]["arg_style"], arg_style);
    assert_eq!(r["server_info"]["name"], "handoff");
    for t in ["register_session", "update_context", "request_handoff"] {
        assert!(
            r["advertised_tools"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == t),
            "tools/list lacks {t}"
        );
    }
    assert_eq!(r["setup"]["sessions_registered_ok"], 20, "{}", ctx());
    for (tool, v) in r["setup"]["per_tool"].as_object().unwrap() {
        assert_eq!(v["errors"], 0, "setup {tool}: {}", ctx());
    }
    assert!(r["mixed"]["calls"].as_u64().unwrap() > 0, "{}", ctx());
    assert_eq!(r["mixed"]["errors"], 0, "{}", ctx());
    for (tool, v) in r["mixed"]["per_tool"].as_object().unwrap() {
        assert_eq!(v["errors"], 0, "{tool}: {}", ctx());
        assert_eq!(v["errors_by_text"], json!({}), "{tool}: {}", ctx());
    }
    let v = &r["verification"];
    assert_eq!(v["ok"], true, "{}", ctx());
    assert!(
        v["acked_updates_checked"].as_u64().unwrap() > 0,
        "{}",
        ctx()
    );
    assert_eq!(v["found"], v["acked_updates_checked"], "{}", ctx());
    for k in [
        "lost",
        "duplicated",
        "misordered",
        "phantoms",
        "foreign_entries",
    ] {
        assert_eq!(v[k], 0, "verification.{k}: {}", ctx());
    }
    assert_eq!(v["readback_errors"], json!({}), "{}", ctx());
    assert_eq!(r["noise"]["stdout_non_jsonrpc_lines"], 0, "{}", ctx());
    assert_eq!(r["noise"]["other_transport_errors"], 0, "{}", ctx());
}

#[test]
fn typescript_sdk_load_camel_case() {
    run_mcp_load("camel");
}

#[test]
fn typescript_sdk_load_snake_case() {
    run_mcp_load("snake");
}

/// A virtualenv with the MCP Python SDK (2.x preferred); reused when it
/// already imports `mcp`. Returns its python.
fn python_sdk_venv() -> PathBuf {
    let venv = target_dir().join("py-mcp-venv");
    let py = venv.join("bin/python");
    let works = |py: &Path| {
        Command::new(py)
            .args(["-c", "import mcp"])
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
    if !pip("mcp>=2") {
        eprintln!("NOTE: `pip install \"mcp>=2\"` failed; falling back to the newest `mcp`");
        assert!(pip("mcp"), "pip install mcp failed");
    }
    assert!(
        works(&py),
        "the venv does not import mcp after installing it"
    );
    py
}

#[test]
fn python_sdk_stdio_client() {
    if !have("python3") {
        eprintln!("SKIPPED: `python3` is not installed; the Python SDK client test needs it");
        return;
    }
    let py = python_sdk_venv();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_check.py");
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("h.db").display());
    let key = "py-session";
    let started = Instant::now();
    let out = Command::new(&py)
        .arg(&script)
        .arg(common::BIN)
        .arg(&url)
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
    let sdk = r["sdk_version"].as_str().unwrap().to_string();
    eprintln!(
        "Python SDK {sdk} negotiated {} in {:?}",
        r["protocol_version"],
        started.elapsed()
    );

    // The SDK 2.x client probes the newest revision first, and the server
    // speaks it.
    if sdk.split('.').next().and_then(|m| m.parse::<u32>().ok()) >= Some(2) {
        assert_eq!(r["protocol_version"], "2026-07-28", "SDK {sdk}");
    } else {
        eprintln!(
            "NOTE: Python SDK {sdk} (not 2.x) negotiated {}",
            r["protocol_version"]
        );
        assert!(r["protocol_version"]
            .as_str()
            .is_some_and(|v| v >= "2025-03-26"));
    }
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
