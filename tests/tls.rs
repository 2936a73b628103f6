//! The daemon over TLS (`--tls-cert`, `--tls-key`): certificates from a
//! test CA made here with the `openssl` command, a rustls client that
//! trusts only that CA, and `openssl s_client` for what a rustls client
//! cannot even offer (TLS 1.1, CBC suites).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use common::daemon::{header, try_message, Daemon};
use common::DbDir;

/// A test CA and leaf certificates for `localhost` / 127.0.0.1 it signs.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=handoff test CA",
        ]);
        std::fs::write(
            pki.path("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("the openssl command (Debian: apt install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new key and certificate `{name}.key` / `{name}.pem`.
    fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
        (self.path(&pem), self.path(&key))
    }

    #[allow(deprecated)] // ring's provider: see src/transport/tls.rs
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

async fn connect(pki: &Pki, addr: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    pki.connector()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS handshake with a certificate from the test CA")
}

/// One POST to /mcp over a new TLS connection: (status, head, body).
async fn post(pki: &Pki, addr: &str, body: &Value, session: Option<&str>) -> (u16, String, String) {
    let body = body.to_string();
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(s) = session {
        req.push_str(&format!(
            "Mcp-Session-Id: {s}\r\nMcp-Protocol-Version: 2025-06-18\r\n"
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = connect(pki, addr).await;
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // A peer that closes without close_notify is fine for this reader.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer in time");
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// `openssl s_client` against the daemon with `args`: (handshake done,
/// everything it printed).
fn s_client(addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the openssl command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let negotiated = out.status.success() && !text.contains("Cipher is (NONE)");
    (negotiated, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_suites_hsts_and_reload_on_sighup() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("first");
    let db = DbDir::new();
    let d = Daemon::start(
        &db,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(d.url().starts_with("https://"), "{}", d.url());
    let addr = d.mcp.clone();

    // TLS 1.3 and 1.2 with an AEAD suite; nothing older, nothing CBC.
    let (ok, out) = s_client(&addr, &["-tls1_3"]);
    assert!(ok && out.contains("TLSv1.3"), "TLS 1.3: {out}");
    let (ok, out) = s_client(&addr, &["-tls1_2"]);
    assert!(ok && out.contains("TLSv1.2"), "TLS 1.2: {out}");
    assert!(
        out.contains("GCM") || out.contains("CHACHA20"),
        "an AEAD suite on TLS 1.2: {out}"
    );
    // SECLEVEL=0 lets this OpenSSL offer TLS 1.1 at all, so the refusal
    // is the server's.
    let (ok, out) = s_client(&addr, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    assert!(!ok, "TLS 1.1 must be refused: {out}");
    // rustls answers with a handshake_failure alert (40).
    assert!(out.contains("alert"), "refused by the server: {out}");
    let (ok, out) = s_client(&addr, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"]);
    assert!(!ok, "a CBC suite must be refused: {out}");

    // MCP over TLS, HSTS on the answer (and on a refusal).
    let (status, head, body) = post(
        &pki,
        &addr,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "tls-test", "version": "0"}}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{head}\n{body}");
    assert_eq!(
        header(&head, "strict-transport-security"),
        Some("max-age=31536000"),
        "{head}"
    );
    let init = try_message(&body, 1).expect("initialize result");
    assert_eq!(init["result"]["serverInfo"]["name"], "handoff", "{init}");
    let session = header(&head, "mcp-session-id").unwrap().to_string();
    let (status, head, _) = post(&pki, &addr, &json!({"not": "json-rpc"}), Some("nope")).await;
    assert!(status >= 400, "{head}");
    assert!(
        header(&head, "strict-transport-security").is_some(),
        "{head}"
    );

    let rpc = |id: i64, method: &str, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let (status, ..) = post(
        &pki,
        &addr,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&session),
    )
    .await;
    assert_eq!(status, 202);
    let call = |id, name: &str, args: Value| {
        rpc(id, "tools/call", json!({"name": name, "arguments": args}))
    };
    let (_, _, body) = post(
        &pki,
        &addr,
        &call(
            2,
            "register_session",
            json!({"session_key": "tls", "agent_from": "a"}),
        ),
        Some(&session),
    )
    .await;
    assert!(
        try_message(&body, 2).unwrap()["result"]["isError"] != true,
        "{body}"
    );
    let (_, _, body) = post(
        &pki,
        &addr,
        &rpc(
            3,
            "resources/subscribe",
            json!({"uri": "handoff://context/tls"}),
        ),
        Some(&session),
    )
    .await;
    assert!(
        try_message(&body, 3).unwrap().get("result").is_some(),
        "{body}"
    );

    // The session's SSE stream, opened on the first certificate.
    let mut stream = connect(&pki, &addr).await;
    let peer = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(peer, der(&cert));
    stream
        .write_all(
            format!(
                "GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\
                 Mcp-Session-Id: {session}\r\nMcp-Protocol-Version: 2025-06-18\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "\r\n\r\n").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");

    // A new certificate in place of the old, and SIGHUP.
    let (next_cert, next_key) = pki.leaf("second");
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    d.signal(libc::SIGHUP);
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let peer = connect(&pki, &addr)
            .await
            .get_ref()
            .1
            .peer_certificates()
            .unwrap()[0]
            .to_vec();
        if peer == der(&next_cert) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the new certificate is served after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The stream opened before the reload still delivers.
    let (_, _, body) = post(
        &pki,
        &addr,
        &call(
            4,
            "update_context",
            json!({"session_key": "tls", "context_type": "message", "content": "after reload"}),
        ),
        Some(&session),
    )
    .await;
    assert!(
        try_message(&body, 4).unwrap()["result"]["isError"] != true,
        "{body}"
    );
    read_until(&mut stream, &mut seen, "notifications/resources/updated").await;
    assert!(seen.contains("handoff://context/tls"), "{seen}");
    drop(stream);

    assert!(d.stop().await.success());
}

/// Read `stream` into `seen` until it holds `needle` (10 s at most).
async fn read_until(stream: &mut TlsStream<TcpStream>, seen: &mut String, needle: &str) {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = tokio::time::timeout_at(until, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in time; got: {seen}"))
            .expect("the stream stays open");
        assert!(n > 0, "the stream closed; got: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn a_non_loopback_address_needs_tls_and_keys() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("leaf");
    let db = DbDir::new();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(common::BIN)
            .args(["serve", "--http", "0.0.0.0:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("HANDOFF_DATABASE_URL", db.url())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    // Keys (the default) without TLS: refused.
    let (ok, err) = run(&[], &[]);
    assert!(!ok && err.contains("without TLS"), "{err}");
    // TLS without keys: refused, even with --insecure.
    let (ok, err) = run(&tls, &[("HANDOFF_HTTP__AUTH", "none")]);
    assert!(!ok && err.contains("without authentication"), "{err}");
    let (ok, err) = run(&["--insecure"], &[("HANDOFF_HTTP__AUTH", "none")]);
    assert!(!ok && err.contains("without authentication"), "{err}");
    // A half-given pair is refused by the command line.
    let (ok, err) = run(&["--tls-cert", cert.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("--tls-key"), "{err}");
}

/// `sslmode=require` in the PostgreSQL URL and `rediss://` for Redis are
/// honoured: the server's database connections are TLS (PostgreSQL's own
/// view, pg_stat_ssl), and the cache talks to a Redis that serves TLS
/// only, verifying its certificate against the roots in SSL_CERT_FILE.
#[tokio::test]
async fn postgres_and_redis_over_tls_when_their_urls_ask() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("redis");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let _redis = tokio::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port, "--bind", "127.0.0.1"])
        .args(["--tls-cert-file", cert.to_str().unwrap()])
        .args(["--tls-key-file", key.to_str().unwrap()])
        .args(["--tls-ca-cert-file", pki.path("ca.pem").to_str().unwrap()])
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server (Debian: apt install redis-server)");
    let ca = pki.path("ca.pem");
    let redis_cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", ca.to_str().unwrap(), "-p", &port])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while redis_cli(&["ping"]) != "PONG" {
        assert!(tokio::time::Instant::now() < until, "the TLS Redis came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let db = DbDir::postgres();
    let url = format!("{}?sslmode=require", db.url());
    let redis_url = format!("rediss://127.0.0.1:{port}/");
    let server = common::Server::start_with(
        &db,
        &[
            ("HANDOFF_DATABASE_URL", url.as_str()),
            ("HANDOFF_REDIS_URL", redis_url.as_str()),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ],
        |_| {},
    )
    .await;
    server
        .call(
            "register_session",
            json!({"session_key": "tls", "agent_from": "a"}),
        )
        .await;
    server
        .call(
            "update_context",
            json!({"session_key": "tls", "context_type": "message", "content": "over TLS"}),
        )
        .await;
    let summary = server.read_text("handoff://summary/tls").await.unwrap();
    assert!(summary.contains("over TLS"), "{summary}");

    let name = db.pg_name().unwrap();
    let out = Command::new("psql")
        .arg(format!("{}/postgres", common::pg_server_url()))
        .args([
            "-Atc",
            &format!(
                "select count(*) filter (where s.ssl), count(*) from pg_stat_ssl s \
             join pg_stat_activity a using (pid) where a.datname = '{name}'"
            ),
        ])
        .output()
        .unwrap();
    let counts = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (tls, all) = counts.split_once('|').expect("psql counts");
    assert!(all != "0" && tls == all, "TLS connections | all: {counts}");
    // The cache connects in the background: the first writes may miss it.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while redis_cli(&["dbsize"]) == "0" {
        assert!(
            tokio::time::Instant::now() < until,
            "the session was cached in the TLS Redis; server log: {}",
            std::fs::read_to_string(db.stderr_log()).unwrap_or_default()
        );
        server
            .call(
                "update_context",
                json!({"session_key": "tls", "context_type": "message", "content": "again"}),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

mod common;
