//! `handoff status`: a running daemon's supervision tree, breakers and
//! dependencies, from `/status` on its admin listener. Exit 0 when the
//! daemon is ready, 1 when it answers not ready, 2 when it cannot be
//! reached. Needs nothing but this binary (the container's HEALTHCHECK).
//!
//! A stdio server has no listener to ask: it belongs to the one client
//! that started it, which reads the same report as `handoff://health`.

use std::time::Duration;

use serde_json::Value;

/// `127.0.0.1:9090`, `http://127.0.0.1:9090` or `…/status` all name it.
fn status_url(admin: &str) -> String {
    let base = if admin.contains("://") {
        admin.to_string()
    } else {
        format!("http://{admin}")
    };
    let base = base.trim_end_matches('/');
    if base.ends_with("/status") {
        base.to_string()
    } else {
        format!("{base}/status")
    }
}

pub async fn run(admin: Option<String>, json: bool) -> u8 {
    let Some(admin) = admin else {
        eprintln!(
            "handoff status: no admin listener given (--admin ADDR or http.admin). It reads a \
             daemon's /status; a stdio server has none — its client reads handoff://health."
        );
        return 2;
    };
    let url = status_url(&admin);
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    else {
        eprintln!("handoff status: no HTTP client (TLS roots?)");
        return 2;
    };
    let doc: Value = match client.get(&url).send().await {
        Ok(r) => match r
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(v) => v,
            None => {
                eprintln!("handoff status: {url} did not answer with a status document");
                return 2;
            }
        },
        Err(e) => {
            eprintln!("handoff status: cannot reach {url}: {}", e.without_url());
            return 2;
        }
    };
    if json {
        println!("{doc}");
    } else {
        print!("{}", render(&doc));
    }
    if doc["ready"] == true {
        0
    } else {
        1
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// The document as a tree, one line a node.
pub fn render(doc: &Value) -> String {
    let mut out = format!(
        "handoff: {} ({})\n",
        if doc["ready"] == true {
            "ready"
        } else {
            "NOT READY"
        },
        text(&doc["status"])
    );
    out.push_str("root\n");
    let actors = doc["actors"].as_array().cloned().unwrap_or_default();
    for (i, a) in actors.iter().enumerate() {
        let last = i + 1 == actors.len();
        out.push_str(&format!(
            "{} {:<18} {:<8} live {:<3} backlog {:<5} restarts {}\n",
            if last { "└──" } else { "├──" },
            text(&a["group"]),
            text(&a["status"]),
            text(&a["live"]),
            text(&a["backlog"]),
            text(&a["restarts"]),
        ));
        if let Some(c) = a["children"].as_object() {
            out.push_str(&format!(
                "{}   └── {} actors: {} live\n",
                if last { " " } else { "│" },
                text(&c["kind"]),
                text(&c["live"])
            ));
        }
    }
    out.push_str("breakers\n");
    for b in doc["breakers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<18} {}\n",
            text(&b["dependency"]),
            text(&b["state"])
        ));
    }
    out.push_str("dependencies\n");
    for d in doc["dependencies"].as_array().into_iter().flatten() {
        let backend = &d["details"]["backend"];
        out.push_str(&format!(
            "  {:<18} {:<8} {}\n",
            text(&d["name"]),
            text(&d["status"]),
            text(backend)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_takes_any_spelling() {
        for a in [
            "127.0.0.1:9090",
            "http://127.0.0.1:9090",
            "http://127.0.0.1:9090/",
            "http://127.0.0.1:9090/status",
        ] {
            assert_eq!(status_url(a), "http://127.0.0.1:9090/status");
        }
    }
}
