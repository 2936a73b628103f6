//! Structured JSON logs on stderr (stdout belongs to the protocol), and the
//! keyed hash that stands in for a session key in every log line.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

static HASH_KEY: OnceLock<[u8; 32]> = OnceLock::new();

pub fn init(filter: &str) {
    // rmcp logs whole requests at debug and whole error replies at warn, and
    // ractor logs actor names (which hold session keys): neither may reach
    // the log, whatever level the operator asks for.
    let filter = format!("{filter},rmcp=error,ractor=error");
    let filter = EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| EnvFilter::new("info,rmcp=error,ractor=error"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .flatten_event(true)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    // A panic (a bug, or the test hook) becomes one JSON log line with its
    // location, instead of free text on stderr; the message is redacted.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(panic = %redact(&msg), location, "panic");
    }));
}

/// Fix the key used for session-key hashes (once, at start-up).
pub fn set_hash_key(key: [u8; 32]) {
    let _ = HASH_KEY.set(key);
}

pub fn hash_key() -> [u8; 32] {
    *HASH_KEY.get_or_init(|| blake3::hash(uuid::Uuid::new_v4().as_bytes()).into())
}

/// What logs carry instead of a session key.
pub fn key_hash(value: &str) -> String {
    handoff_actors::key_hash(&hash_key(), value)
}

/// Scrub known secret shapes from a string before it reaches a log: bearer
/// tokens, passwords in URLs, private keys, AWS access keys, API-key-like
/// assignments.
pub fn redact(s: &str) -> String {
    let mut out = s.to_string();
    // user:password@ in URLs
    if let Some(scheme) = out.find("://") {
        let rest = &out[scheme + 3..];
        if let Some(at) = rest.find('@') {
            if let Some(colon) = rest[..at].find(':') {
                let start = scheme + 3 + colon + 1;
                let end = scheme + 3 + at;
                out.replace_range(start..end, "***");
            }
        }
    }
    let mut words: Vec<String> = out.split(' ').map(str::to_string).collect();
    for i in 0..words.len() {
        let w = words[i].clone();
        let lower = w.to_ascii_lowercase();
        let after_bearer = i > 0 && words[i - 1].eq_ignore_ascii_case("bearer");
        let aws_key = (w.starts_with("AKIA") || w.starts_with("ASIA")) && w.len() == 20;
        if after_bearer || aws_key {
            words[i] = "***".into();
        } else if ["password=", "token=", "api_key=", "apikey=", "secret="]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            let eq = w.find('=').unwrap_or(0);
            words[i] = format!("{}=***", &w[..eq]);
        } else if w.starts_with("sk-") || w.starts_with("hk_") {
            words[i] = "***".into();
        }
    }
    out = words.join(" ");
    if let Some(start) = out.find("-----BEGIN") {
        out.truncate(start);
        out.push_str("[private key redacted]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_secret_shapes() {
        assert_eq!(
            redact("postgres://app:hunter2@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(
            redact("Authorization: Bearer abc.def"),
            "Authorization: Bearer ***"
        );
        assert_eq!(redact("key AKIAIOSFODNN7EXAMPLE used"), "key *** used");
        assert_eq!(redact("password=hunter2 ok"), "password=*** ok");
        assert!(!redact("x -----BEGIN PRIVATE KEY----- abc").contains("abc"));
    }
}
