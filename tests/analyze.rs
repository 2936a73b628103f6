//! `analyze_codebase` through the real MCP client (CONTRACT.md §3): per
//! language imports and symbols on fixture files in a temporary workspace
//! root, the one `file` entry it appends, confinement to the root
//! (`..`, absolute paths, symlinks → FORBIDDEN, nothing appended), the
//! disabled default, the content limit and the path-count limit.

mod common;

use std::path::Path;

use common::{register, DbDir, Server};
use serde_json::{json, Value};

/// A unique string inside a fixture's string literal: it must never show up
/// in the stored entry or the logs (the analysis, not the file, is stored).
const MARKER: &str = "FIXTURE-CONTENT-7f3a91";

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A workspace root (`ws/`) with one small file per language, next to a
/// directory outside it (`outside/`).
fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir_all(&root).unwrap();
    write(
        &root,
        "src/lib.rs",
        &format!(
            "//! Docs: use fake::thing;\nuse std::collections::HashMap;\nuse serde::{{Deserialize, Serialize}};\nmod util;\n\n\
             #[derive(Debug)]\npub struct Config {{\n    pub name: String,\n}}\n\npub enum Mode {{ A, B }}\n\
             pub trait Run {{ fn run(&self); }}\nimpl Run for Config {{\n    fn run(&self) {{ let _ = \"{MARKER}\"; }}\n}}\n\
             pub fn start() {{}}\nconst LIMIT: usize = 3;\n"
        ),
    );
    write(
        &root,
        "web/app.ts",
        "import React from 'react';\nimport { helper } from './helper';\nexport * from '@scope/shared/types';\n\
         const fs = require('fs');\n// export function commentedOut() {}\nexport interface Props { name: string }\n\
         export type Id = string;\nexport default function App() {\n  return null;\n}\nclass Widget {}\n\
         export const VERSION = '1';\n",
    );
    write(
        &root,
        "web/util.js",
        "const path = require('path');\nfunction join(a, b) { return path.join(a, b); }\nlet counter = 0;\n\
         module.exports = { join };\n",
    );
    write(
        &root,
        "py/tool.py",
        "\"\"\"Tool.\n\ndef not_real():\n\"\"\"\nimport os\nimport sys as system\nfrom collections import OrderedDict\n\
         from . import sibling\n\n\ndef main():\n    import json\n    return 1\n\n\nclass _Helper:\n    def method(self):\n        pass\n",
    );
    write(
        &root,
        "go/main.go",
        "package main\n\nimport (\n\t\"fmt\"\n\tnethttp \"net/http\"\n)\n\nimport \"os\"\n\nconst Version = \"1\"\n\n\
         type Server struct {\n\tAddr string\n}\n\nfunc (s *Server) Start() error { return nil }\n\n\
         func main() {\n\tfmt.Println(nethttp.StatusOK, os.Args)\n}\n",
    );
    write(&root, "notes.txt", "just\n\nsome notes\n");
    write(dir.path(), "outside/secret.txt", "top secret\n");
    dir
}

fn root(dir: &tempfile::TempDir) -> String {
    dir.path().join("ws").to_str().unwrap().to_string()
}

async fn start(env: &[(&str, &str)]) -> (DbDir, Server) {
    let db = DbDir::new();
    let s = Server::start(&db, env).await;
    (db, s)
}

fn file<'a>(out: &'a Value, path: &str) -> &'a Value {
    out["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no result for {path} in {out}"))
}

fn modules(f: &Value) -> Vec<&str> {
    f["imports"]
        .as_array()
        .unwrap_or_else(|| panic!("no imports in {f}"))
        .iter()
        .map(|i| i["module"].as_str().unwrap())
        .collect()
}

fn symbols(f: &Value) -> Vec<(String, String)> {
    f["symbols"]
        .as_array()
        .unwrap_or_else(|| panic!("no symbols in {f}"))
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn output_schema(s: &Server) -> Value {
    let tools = s.client.list_all_tools().await.expect("tools/list");
    let t = tools
        .into_iter()
        .find(|t| t.name == "analyze_codebase")
        .expect("analyze_codebase in tools/list");
    Value::Object((*t.output_schema.expect("outputSchema")).clone())
}

#[tokio::test]
async fn analyzes_each_language_and_appends_one_file_entry() {
    let dir = fixtures();
    let root = root(&dir);
    let (db, s) = start(&[
        ("HANDOFF_WORKSPACE_ROOT", root.as_str()),
        ("HANDOFF_LOG", "debug"),
    ])
    .await;
    register(&s, "analyze").await;

    let schema = output_schema(&s).await;

    let paths = [
        "src/lib.rs",
        "web/app.ts",
        "web/util.js",
        "py/tool.py",
        "go/main.go",
        "notes.txt",
    ];
    let r = s
        .call(
            "analyze_codebase",
            json!({"session_key": "analyze", "file_paths": paths}),
        )
        .await;
    let out = r.ok().clone();
    let p = common::schema_problems(&schema, &out);
    assert!(p.is_empty(), "reply vs outputSchema: {p:?}\n{out}");
    assert_eq!(out["analysis_type"], "full");
    assert_eq!(out["totals"]["files"], 6);
    assert_eq!(out["totals"]["analyzed"], 6);
    // Results come back in the order asked.
    let order: Vec<&str> = out["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(order, paths);

    let rs = file(&out, "src/lib.rs");
    assert_eq!(rs["language"], "rust");
    assert_eq!(rs["status"], "analyzed");
    assert_eq!(rs["lines"]["total"], 17);
    assert_eq!(
        modules(rs),
        vec![
            "std::collections::HashMap",
            "serde::{Deserialize, Serialize}",
            "util"
        ]
    );
    assert_eq!(rs["dependencies"], json!(["serde", "std"]));
    assert_eq!(
        symbols(rs),
        pairs(&[
            ("module", "util"),
            ("struct", "Config"),
            ("enum", "Mode"),
            ("trait", "Run"),
            ("impl", "Run for Config"),
            ("function", "start"),
            ("const", "LIMIT"),
        ])
    );
    let config = &rs["symbols"][1];
    assert_eq!(config["line"], 7);
    assert_eq!(config["exported"], true);

    let ts = file(&out, "web/app.ts");
    assert_eq!(ts["language"], "typescript");
    assert_eq!(
        modules(ts),
        vec!["react", "./helper", "@scope/shared/types", "fs"]
    );
    assert_eq!(ts["dependencies"], json!(["@scope/shared", "fs", "react"]));
    assert_eq!(
        symbols(ts),
        pairs(&[
            ("const", "fs"),
            ("interface", "Props"),
            ("type", "Id"),
            ("function", "App"),
            ("class", "Widget"),
            ("const", "VERSION"),
        ])
    );
    assert_eq!(ts["lines"]["comment"], 1);

    let js = file(&out, "web/util.js");
    assert_eq!(js["language"], "javascript");
    assert_eq!(modules(js), vec!["path"]);
    assert_eq!(
        symbols(js),
        pairs(&[("const", "path"), ("function", "join"), ("let", "counter")])
    );

    let py = file(&out, "py/tool.py");
    assert_eq!(py["language"], "python");
    assert_eq!(modules(py), vec!["os", "sys", "collections", ".", "json"]);
    assert_eq!(
        py["dependencies"],
        json!(["collections", "json", "os", "sys"])
    );
    assert_eq!(
        symbols(py),
        pairs(&[("function", "main"), ("class", "_Helper")])
    );
    assert_eq!(py["symbols"][1]["exported"], false);

    let go = file(&out, "go/main.go");
    assert_eq!(go["language"], "go");
    assert_eq!(modules(go), vec!["fmt", "net/http", "os"]);
    assert_eq!(
        symbols(go),
        pairs(&[
            ("const", "Version"),
            ("type", "Server"),
            ("method", "Server.Start"),
            ("function", "main"),
        ])
    );

    let txt = file(&out, "notes.txt");
    assert_eq!(txt["language"], "unknown");
    assert_eq!(txt["lines"]["total"], 3);
    assert_eq!(txt["lines"]["blank"], 1);
    assert!(txt.get("imports").is_none() && txt.get("symbols").is_none());

    // One `file` entry, after the registration's system entry.
    let entry = &out["context_entry"];
    assert_eq!(entry["sequence_number"], 2);
    assert_eq!(entry["context_type"], "file");
    assert_eq!(out["session"]["session_key"], "analyze");
    let entries = common::all_entries(&s, "analyze").await;
    assert_eq!(entries.len(), 2);
    let stored = &entries[1];
    assert_eq!(stored["context_type"], "file");
    assert_eq!(stored["sequence_number"], 2);
    assert_eq!(stored["metadata"]["source"], "analyze_codebase");
    let content = stored["content"].as_str().unwrap();
    assert!(
        content.starts_with("Codebase analysis (full) of 6 files"),
        "{content}"
    );
    assert!(content.contains("## src/lib.rs [rust]"), "{content}");
    assert!(
        content.contains("struct Config [exported] (L7)"),
        "{content}"
    );
    assert!(content.contains("net/http"), "{content}");
    assert_eq!(entry["content_length"], content.len());
    // The analysis, not the files.
    assert!(!content.contains(MARKER), "file contents stored: {content}");

    assert!(s.close().await.success());
    let log = std::fs::read_to_string(db.stderr_log()).unwrap();
    assert!(log.contains("analyze_codebase"), "no tool log line");
    assert!(!log.contains(MARKER), "file contents in the logs");
}

#[tokio::test]
async fn analysis_types_and_camel_case_arguments() {
    let dir = fixtures();
    let root = root(&dir);
    let (_db, s) = start(&[("HANDOFF_WORKSPACE_ROOT", root.as_str())]).await;
    register(&s, "types").await;
    let cases = [
        ("syntax", false, false),
        ("dependencies", true, false),
        ("structure", false, true),
        ("full", true, true),
    ];
    for (kind, imports, syms) in cases {
        let out = s
            .call(
                "analyze_codebase",
                json!({"sessionKey": "types", "filePaths": ["src/lib.rs"], "analysisType": kind}),
            )
            .await
            .ok()
            .clone();
        assert_eq!(out["analysis_type"], kind);
        let f = &out["files"][0];
        assert_eq!(f["language"], "rust");
        assert!(f["lines"]["total"].as_u64().unwrap() > 0);
        assert_eq!(f.get("imports").is_some(), imports, "{kind}: {f}");
        assert_eq!(f.get("dependencies").is_some(), imports, "{kind}: {f}");
        assert_eq!(f.get("symbols").is_some(), syms, "{kind}: {f}");
    }
    // Sequence numbers 2..=5: one entry per call.
    let entries = common::all_entries(&s, "types").await;
    assert_eq!(entries.len(), 5);
    assert!(entries[1]["content"]
        .as_str()
        .unwrap()
        .starts_with("Codebase analysis (syntax)"));

    // Both spellings of one field, an unknown field, a bad analysis_type.
    for bad in [
        json!({"session_key": "types", "sessionKey": "types", "file_paths": ["src/lib.rs"]}),
        json!({"session_key": "types", "file_paths": ["src/lib.rs"], "bogus": 1}),
        json!({"session_key": "types", "file_paths": ["src/lib.rs"], "analysis_type": "deep"}),
        json!({"session_key": "types"}),
    ] {
        s.call("analyze_codebase", bad)
            .await
            .err("VALIDATION_ERROR");
    }
    assert_eq!(common::all_entries(&s, "types").await.len(), 5);
    assert!(s.close().await.success());
}

#[tokio::test]
async fn paths_outside_the_root_are_forbidden_and_nothing_is_appended() {
    let dir = fixtures();
    let root = root(&dir);
    let ws = dir.path().join("ws");
    let outside = dir.path().join("outside");
    std::os::unix::fs::symlink(outside.join("secret.txt"), ws.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("outdir")).unwrap();
    let (_db, s) = start(&[("HANDOFF_WORKSPACE_ROOT", root.as_str())]).await;
    register(&s, "confined").await;

    let abs_outside = outside.join("secret.txt").to_str().unwrap().to_string();
    let cases = [
        "../outside/secret.txt".to_string(),
        "src/../../outside/secret.txt".to_string(),
        abs_outside.clone(),
        "/etc/passwd".to_string(),
        "leak.txt".to_string(),
        "outdir/secret.txt".to_string(),
        "outdir/does-not-exist.txt".to_string(),
    ];
    for bad in &cases {
        // Alone, and after a valid path: the whole call is refused.
        for paths in [json!([bad]), json!(["src/lib.rs", bad])] {
            let r = s
                .call(
                    "analyze_codebase",
                    json!({"session_key": "confined", "file_paths": paths}),
                )
                .await;
            let e = r.err("FORBIDDEN");
            assert_eq!(e["retryable"], false);
            assert!(e["details"]["field"]
                .as_str()
                .unwrap()
                .starts_with("file_paths["));
            let msg = e["error"].as_str().unwrap();
            assert!(msg.contains("workspace root"), "{msg}");
            // Never the content, never where a symlink led.
            assert!(!e.to_string().contains("top secret"));
            if !bad.starts_with('/') {
                assert!(!e.to_string().contains(outside.to_str().unwrap()), "{e}");
            }
        }
    }
    // Only the registration entry.
    assert_eq!(common::all_entries(&s, "confined").await.len(), 1);

    // An absolute path inside the root is fine; so is `..` that stays inside.
    let abs_inside = ws.join("src/lib.rs").to_str().unwrap().to_string();
    let out = s
        .call(
            "analyze_codebase",
            json!({"session_key": "confined", "file_paths": [abs_inside, "web/../src/lib.rs"]}),
        )
        .await
        .ok()
        .clone();
    assert_eq!(out["totals"]["analyzed"], 2);
    assert_eq!(out["files"][0]["resolved_path"], "src/lib.rs");
    assert_eq!(out["files"][1]["resolved_path"], "src/lib.rs");
    assert!(s.close().await.success());
}

#[tokio::test]
async fn without_a_workspace_root_the_tool_is_forbidden() {
    let (_db, s) = start(&[]).await;
    register(&s, "noroot").await;
    let r = s
        .call(
            "analyze_codebase",
            json!({"session_key": "noroot", "file_paths": ["Cargo.toml"]}),
        )
        .await;
    let e = r.err("FORBIDDEN");
    let schema = output_schema(&s).await;
    let p = common::schema_problems(&schema, e);
    assert!(p.is_empty(), "error vs outputSchema: {p:?}\n{e}");
    assert!(e["error"]
        .as_str()
        .unwrap()
        .contains("HANDOFF_WORKSPACE_ROOT"));
    assert_eq!(e["details"]["setting"], "HANDOFF_WORKSPACE_ROOT");
    assert_eq!(common::all_entries(&s, "noroot").await.len(), 1);
    assert!(s.close().await.success());
}

#[tokio::test]
async fn an_invalid_workspace_root_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = std::process::Command::new(common::BIN)
        .arg("serve")
        .env("HANDOFF_WORKSPACE_ROOT", &missing)
        .env(
            "HANDOFF_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("h.db").display()),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run handoff");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HANDOFF_WORKSPACE_ROOT"), "{err}");
}

#[tokio::test]
async fn oversized_and_missing_files_are_reported_per_file() {
    let dir = fixtures();
    let root = root(&dir);
    let ws = dir.path().join("ws");
    write(&ws, "big.rs", &"// padding line\n".repeat(1000)); // 16,000 bytes
    write(&ws, "blob.bin", "a\0b");
    let (_db, s) = start(&[
        ("HANDOFF_WORKSPACE_ROOT", root.as_str()),
        ("HANDOFF_MAX_CONTENT_BYTES", "4096"),
    ])
    .await;
    register(&s, "limits").await;
    let out = s
        .call(
            "analyze_codebase",
            json!({"session_key": "limits", "file_paths": ["big.rs", "src/lib.rs", "missing.rs", "web", "blob.bin"]}),
        )
        .await
        .ok()
        .clone();
    let schema = output_schema(&s).await;
    let p = common::schema_problems(&schema, &out);
    assert!(p.is_empty(), "reply vs outputSchema: {p:?}\n{out}");
    let big = file(&out, "big.rs");
    assert_eq!(big["status"], "skipped");
    assert_eq!(big["size_bytes"], 16_000);
    let reason = big["reason"].as_str().unwrap();
    assert!(
        reason.contains("16000") && reason.contains("4096"),
        "{reason}"
    );
    assert!(big.get("lines").is_none());
    assert_eq!(file(&out, "src/lib.rs")["status"], "analyzed");
    let missing = file(&out, "missing.rs");
    assert_eq!(missing["status"], "error");
    assert_eq!(missing["reason"], "not found");
    let d = file(&out, "web");
    assert_eq!(d["status"], "error");
    assert_eq!(d["reason"], "not a regular file");
    let blob = file(&out, "blob.bin");
    assert_eq!(blob["status"], "skipped");
    assert!(blob["reason"].as_str().unwrap().contains("binary"));
    assert_eq!(out["totals"]["analyzed"], 1);
    assert_eq!(out["totals"]["skipped"], 2);
    assert_eq!(out["totals"]["errors"], 2);

    let entries = common::all_entries(&s, "limits").await;
    assert_eq!(entries.len(), 2);
    let content = entries[1]["content"].as_str().unwrap();
    assert!(content.len() <= 4096);
    assert!(
        content.contains("## big.rs [rust] skipped: file is 16000 bytes"),
        "{content}"
    );
    assert!(
        content.contains("## missing.rs [rust] error: not found"),
        "{content}"
    );
    assert!(s.close().await.success());
}

#[tokio::test]
async fn path_count_and_session_are_checked() {
    let dir = fixtures();
    let root = root(&dir);
    let (_db, s) = start(&[("HANDOFF_WORKSPACE_ROOT", root.as_str())]).await;
    register(&s, "counts").await;
    let many: Vec<String> = (0..51).map(|i| format!("f{i}.rs")).collect();
    let e = s
        .call(
            "analyze_codebase",
            json!({"session_key": "counts", "file_paths": many}),
        )
        .await;
    let e = e.err("VALIDATION_ERROR");
    assert_eq!(e["details"]["field"], "file_paths");
    s.call(
        "analyze_codebase",
        json!({"session_key": "counts", "file_paths": []}),
    )
    .await
    .err("VALIDATION_ERROR");
    s.call(
        "analyze_codebase",
        json!({"session_key": "counts", "file_paths": [""]}),
    )
    .await
    .err("VALIDATION_ERROR");
    // 50 is the most one call takes (here the same file 50 times).
    let fifty = vec!["notes.txt"; 50];
    let out = s
        .call(
            "analyze_codebase",
            json!({"session_key": "counts", "file_paths": fifty}),
        )
        .await
        .ok()
        .clone();
    assert_eq!(out["totals"]["analyzed"], 50);
    assert_eq!(common::all_entries(&s, "counts").await.len(), 2);

    s.call(
        "analyze_codebase",
        json!({"session_key": "no-such-session", "file_paths": ["notes.txt"]}),
    )
    .await
    .err("SESSION_NOT_FOUND");
    assert!(s.close().await.success());
}

/// A hard link inside the root to a file outside it is not read (no path
/// check can see where its other name lies), and a FIFO inside the root is
/// answered at once instead of blocking a thread.
#[tokio::test]
async fn hard_links_and_fifos_are_not_read() {
    let dir = fixtures();
    let root = root(&dir);
    let ws = dir.path().join("ws");
    std::fs::hard_link(dir.path().join("outside/secret.txt"), ws.join("inside.py")).unwrap();
    let fifo = std::ffi::CString::new(ws.join("pipe.rs").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let (_db, s) = start(&[("HANDOFF_WORKSPACE_ROOT", root.as_str())]).await;
    register(&s, "links").await;
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        s.call(
            "analyze_codebase",
            json!({"session_key": "links", "file_paths": ["inside.py", "pipe.rs", "src/lib.rs"]}),
        ),
    )
    .await
    .expect("analyze_codebase hung on a FIFO");
    let out = r.ok().clone();
    let files = out["files"].as_array().unwrap();
    assert_eq!(files[0]["status"], "skipped", "{out}");
    assert!(
        files[0]["reason"].as_str().unwrap().contains("hard link"),
        "{out}"
    );
    assert!(
        files[0].get("lines").is_none() || files[0]["lines"]["total"] == 0,
        "{out}"
    );
    assert_ne!(files[1]["status"], "analyzed", "{out}");
    assert_eq!(files[2]["status"], "analyzed", "{out}");
    assert!(!out.to_string().contains("top secret"));
    assert!(s.close().await.success());
}
