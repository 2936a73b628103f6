//! Structured JSON logs on stderr (stdout belongs to the protocol), and the
//! keyed hash that stands in for a session key in every log line.

use std::sync::OnceLock;

use regex::Regex;
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
    // Each is counted too (`handoff_panics_total`).
    std::panic::set_hook(Box::new(|info| {
        handoff_actors::metrics::metrics().panics.inc();
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

/// The id of one HTTP request, in its extensions: every log line about it
/// and the error a client gets carry it.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub uuid::Uuid);

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

/// Secret shapes, each with what replaces it: enough of the shape stays
/// visible (`postgres://app:***@db`, `password=***`, `Bearer ***`,
/// `ghp_***`) for the log line to stay readable. Applied in this order,
/// each over the whole string, every occurrence.
fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        [
            // PEM private keys, the block whole (or to the end if cut).
            (
                r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
                "[private key redacted]",
            ),
            // user:password@ in any URL.
            (r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@", "${1}:***@"),
            // Authorization headers and bearer/basic tokens.
            (r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{4,}", "${1} ***"),
            // JWTs.
            (r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*", "***"),
            // Provider tokens: GitHub, Slack, Google, Stripe-like, OpenAI and
            // Anthropic, this project's API keys (hk_).
            (r"\b(gh[pousr]_|github_pat_)[A-Za-z0-9_]{16,}", "${1}***"),
            (r"\b(xox[abposr]-)[A-Za-z0-9-]{8,}", "${1}***"),
            (r"\bAIza[0-9A-Za-z_-]{30,}", "AIza***"),
            (r"\b(sk|pk|rk|hk)([-_](?:live|test|ant|proj))?[-_][A-Za-z0-9_-]{12,}", "${1}***"),
            // AWS access key ids.
            (r"\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b", "***"),
            // key = value / key: value / "key": "value" for secret-ish keys
            // (aws_secret_access_key, password, passwd, pwd, secret,
            // api_key, apikey, access_token, token, private_key, auth).
            (
                r#"(?i)("?\b[a-z0-9_.-]*(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|token|private[_-]?key|authorization|auth)[a-z0-9_.-]*"?\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s,;&"'}]+)"#,
                "${1}***",
            ),
        ]
        .into_iter()
        .map(|(re, with)| (Regex::new(re).expect("a valid pattern"), with))
        .collect()
    })
}

/// Scrub known secret shapes from a string before it reaches a log: keys
/// in URLs, bearer tokens, private keys, provider tokens (GitHub, Slack,
/// Google, AWS, OpenAI/Anthropic-style), JWTs, and `password=`-style
/// assignments in any of their usual spellings.
pub fn redact(s: &str) -> String {
    let mut out = std::borrow::Cow::Borrowed(s);
    for (re, with) in patterns() {
        if let std::borrow::Cow::Owned(replaced) = re.replace_all(&out, *with) {
            out = std::borrow::Cow::Owned(replaced);
        }
    }
    out.into_owned()
}

/// Characters of a client's string that a log line keeps.
const CLIENT_STR_CHARS: usize = 200;

/// A string a client sent (a tool name, a URI), as a log may show it:
/// redacted and cut to `CLIENT_STR_CHARS` characters, with its full length
/// noted, so a client cannot write megabytes into the log.
pub fn client_str(s: &str) -> String {
    let head: String = s.chars().take(CLIENT_STR_CHARS).collect();
    let head = redact(&head);
    if head.len() < s.len() && s.chars().nth(CLIENT_STR_CHARS).is_some() {
        format!("{head}… ({} bytes)", s.len())
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::{client_str, redact};

    /// Real secret shapes, several to a line, among text that must survive.
    #[test]
    fn redacts_secret_shapes() {
        let table: &[(&str, &[&str], &[&str])] = &[
            (
                "postgres://app:hunter2@db/x and redis://:s3cr3t@cache:6379/0 ok",
                &["hunter2", "s3cr3t"],
                &["postgres://app:***@db/x", "cache:6379/0 ok"],
            ),
            (
                "password=hunter2 then password: hunter3, {\"password\": \"hunter4\"} and PASSWD='h5'",
                &["hunter2", "hunter3", "hunter4", "h5"],
                &["password=***", "then"],
            ),
            (
                "Authorization: Bearer abc.def-ghi and bearer XYZ123456",
                &["abc.def-ghi", "XYZ123456"],
                &["Authorization: ***", "and bearer ***"],
            ),
            (
                "gh ghp_0123456789abcdefghijABCDEFGHIJ012345 and github_pat_11ABCDEFG0123456789_abcdefghijkl",
                &["0123456789abcdefghij", "11ABCDEFG0123456789"],
                &["ghp_***"],
            ),
            ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp", &["AbCdEfGhIjKlMnOp"], &["xoxb-***"]),
            ("google AIzaSyA-1234567890abcdefghijklmnopqrstu end", &["SyA-1234567890"], &["AIza***", "end"]),
            (
                "aws AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                &["AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI"],
                &["aws ***"],
            ),
            (
                "keys sk-proj-abcdefghijklmnop123456 sk-ant-api03-abcdefghijklmnopqrst hk_live_abcdefghijklmnop",
                &["abcdefghijklmnop123456", "api03-abcdefghij", "live_abcdefghijklmnop"],
                &["keys"],
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                &["eyJzdWIiOiIxMjM0NTY3ODkwIn0", "dozjgNryP4J3jVmNHl0w5N"],
                &["jwt ***"],
            ),
            (
                "before -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY----- after",
                &["MIIEow", "abc"],
                &["before [private key redacted] after"],
            ),
            (
                "cut -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk",
                &["b3BlbnNzaC1rZXk"],
                &["cut [private key redacted]"],
            ),
        ];
        for (input, gone, kept) in table {
            let out = redact(input);
            for g in *gone {
                assert!(!out.contains(g), "{g:?} survived in {out:?}");
            }
            for k in *kept {
                assert!(out.contains(k), "{k:?} lost from {out:?}");
            }
        }
        // Ordinary text is left alone.
        let plain = "session fix-login-bug handed to cursor after 3 entries (nothing secret here)";
        assert_eq!(redact(plain), plain);
    }

    #[test]
    fn client_strings_are_cut_and_redacted() {
        let long = format!(
            "ghp_0123456789abcdefghijABCDEFGHIJ012345{}",
            "x".repeat(100_000)
        );
        let out = client_str(&long);
        assert!(out.len() < 400, "{}", out.len());
        assert!(!out.contains("0123456789abcdefghij"));
        assert!(out.ends_with(&format!("({} bytes)", long.len())));
        assert_eq!(client_str("get_context"), "get_context");
    }
}
