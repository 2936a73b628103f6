//! The runtime-managed configuration sections (`retention`, `monitoring`,
//! `analytics`, `backups`): their typed schema, its validation, and the live
//! cell that holds the effective values.
//!
//! The sections are fields of [`crate::config::Config`], so defaults, the
//! TOML file (`[retention]`) and `HANDOFF_RETENTION__DORMANT_AFTER`-style
//! variables set them at start-up. `update_configuration` and backup restores
//! store overrides in the database; the effective configuration is the
//! start-up values overlaid with those overrides. The one schema below is
//! what start-up, the tools and restore all validate against.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const DAY: u64 = 24 * 60 * 60;
const HOUR: u64 = 60 * 60;

/// Floors and ceilings no caller can go past (contract §1): no nanosecond
/// retention (which purged every session of every tenant), no million-year
/// durations (whose date arithmetic overflowed and panicked the retention
/// job). The floors are realistic for production; tests that need the
/// lifecycle to move in seconds start the server with `test_hooks`, an
/// operator setting no client can reach, which lowers the floors only.
pub mod bounds {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::{DAY, HOUR};

    static TEST_FLOORS: AtomicBool = AtomicBool::new(false);

    /// Lower every floor to `TEST_FLOOR` (the `test_hooks` setting, at
    /// start-up, before any value is validated).
    pub fn use_test_floors(on: bool) {
        TEST_FLOORS.store(on, Ordering::Relaxed);
    }

    fn test_floors() -> bool {
        TEST_FLOORS.load(Ordering::Relaxed)
    }

    /// What every floor becomes with `test_hooks`.
    pub const TEST_FLOOR: Duration = Duration::from_millis(1);
    /// Further attempts a failed job run may make at most.
    pub const MAX_JOB_RETRIES: u32 = 10;
    /// No duration anywhere in the configuration is longer (100 years).
    pub const CEILING: Duration = Duration::from_secs(36_500 * DAY);

    /// `[min, max]` for a duration setting, by `section.key`.
    pub fn duration(key: &str) -> (Duration, Duration) {
        let (min, max) = match key {
            "retention.dormant_after" => (Duration::from_secs(HOUR), CEILING),
            "retention.expire_after" | "retention.archive_after" => {
                (Duration::from_secs(DAY), CEILING)
            }
            "retention.purge_after" => (Duration::from_secs(7 * DAY), CEILING),
            "monitoring.slow_call_threshold" => {
                (Duration::from_millis(1), Duration::from_secs(HOUR))
            }
            "analytics.rollup_interval" => (Duration::from_secs(60), Duration::from_secs(7 * DAY)),
            // Job schedules (`jobs.*`, `update_job_config`).
            "jobs.interval" => (Duration::from_secs(1), Duration::from_secs(30 * DAY)),
            "jobs.retry_delay" => (Duration::ZERO, Duration::from_secs(HOUR)),
            _ => (Duration::from_millis(1), CEILING),
        };
        if test_floors() {
            (min.min(TEST_FLOOR), max)
        } else {
            (min, max)
        }
    }

    /// A problem message when `d` is outside the bounds of `key`.
    pub fn check(key: &str, d: Duration) -> Option<String> {
        let (min, max) = duration(key);
        (d < min || d > max).then(|| {
            format!(
                "must be {}–{} (got {})",
                super::duration::format(&min),
                super::duration::format(&max),
                super::duration::format(&d)
            )
        })
    }
}

/// Durations in and out as humantime strings. Written in the largest whole
/// unit (`7d`, `90d`, `2h`, `1500ms`) rather than humantime's own format,
/// which turns 90 days into `2months 29days 2h 52m 48s`.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(d: &Duration) -> String {
        let s = d.as_secs();
        if d.subsec_nanos() != 0 {
            return match d.subsec_nanos() % 1_000_000 {
                0 => format!("{}ms", d.as_millis()),
                _ => humantime::format_duration(*d).to_string(),
            };
        }
        for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if s != 0 && s.is_multiple_of(n) {
                return format!("{}{unit}", s / n);
            }
        }
        format!("{s}s")
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > 64 {
            return Err(serde::de::Error::custom(format!(
                "a duration of {} bytes is not a duration; use a humantime string such as \"7d\"",
                s.len()
            )));
        }
        humantime::parse_duration(s.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); use a humantime string such as \"7d\" or \"12h\""
            ))
        })
    }
}

/// Session lifecycle thresholds (contract §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// `active` → `dormant` after this long without activity.
    #[serde(with = "duration")]
    pub dormant_after: Duration,
    /// → `expired` after this long without activity.
    #[serde(with = "duration")]
    pub expire_after: Duration,
    /// → `archived` (read-only) after this long.
    #[serde(with = "duration")]
    pub archive_after: Duration,
    /// → purged for good after this long.
    #[serde(with = "duration")]
    pub purge_after: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            dormant_after: Duration::from_secs(7 * DAY),
            expire_after: Duration::from_secs(30 * DAY),
            archive_after: Duration::from_secs(90 * DAY),
            purge_after: Duration::from_secs(365 * DAY),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Whether Prometheus metrics are exported.
    pub metrics_enabled: bool,
    /// A tool call slower than this is logged as a warning.
    #[serde(with = "duration")]
    pub slow_call_threshold: Duration,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            metrics_enabled: true,
            slow_call_threshold: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    pub enabled: bool,
    /// How often the analytics roll-up runs.
    #[serde(with = "duration")]
    pub rollup_interval: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rollup_interval: Duration::from_secs(60 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupsConfig {
    /// Configuration backups kept; creating one more deletes the oldest.
    pub max_backups: u32,
}

impl Default for BackupsConfig {
    fn default() -> Self {
        Self { max_backups: 20 }
    }
}

/// All runtime-managed sections together: what a backup holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub retention: RetentionPolicy,
    pub monitoring: MonitoringConfig,
    pub analytics: AnalyticsConfig,
    pub backups: BackupsConfig,
}

/// One thing wrong with a configuration value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// `section.key` (or the argument path a tool was given).
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Retention,
    Monitoring,
    Analytics,
    Backups,
}

impl Section {
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Retention => "retention",
            Section::Monitoring => "monitoring",
            Section::Analytics => "analytics",
            Section::Backups => "backups",
        }
    }
}

/// Keys whose consumers read them once at start-up: an update is stored and
/// shown, and takes effect after a restart. Every other key applies live
/// (its consumers read the live cell each time).
const RESTART_REQUIRED: &[&str] = &["analytics.rollup_interval"];

pub fn applies_live(key: &str) -> bool {
    !RESTART_REQUIRED.contains(&key)
}

impl Settings {
    /// Every problem, named by `section.key`.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let r = &self.retention;
        let steps = [
            ("retention.dormant_after", r.dormant_after),
            ("retention.expire_after", r.expire_after),
            ("retention.archive_after", r.archive_after),
            ("retention.purge_after", r.purge_after),
        ];
        let mut in_bounds = true;
        for (k, d) in steps {
            if let Some(m) = bounds::check(k, d) {
                p.push(Problem::new(k, m));
                in_bounds = false;
            }
        }
        for w in steps.windows(2) {
            let ((ka, a), (kb, b)) = (w[0], w[1]);
            if in_bounds && a >= b {
                p.push(Problem::new(
                    kb,
                    format!(
                        "must be longer than {ka} ({} is not longer than {})",
                        duration::format(&b),
                        duration::format(&a)
                    ),
                ));
            }
        }
        for (k, d) in [
            (
                "monitoring.slow_call_threshold",
                self.monitoring.slow_call_threshold,
            ),
            ("analytics.rollup_interval", self.analytics.rollup_interval),
        ] {
            if let Some(m) = bounds::check(k, d) {
                p.push(Problem::new(k, m));
            }
        }
        if self.backups.max_backups == 0 || self.backups.max_backups > 1000 {
            p.push(Problem::new("backups.max_backups", "must be 1–1000"));
        }
        p
    }

    /// The canonical JSON a backup stores and its checksum covers.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("settings serialise")
    }

    pub fn to_json(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// Every `section.key` with its value, in schema order.
    pub fn flatten(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (section, v) in self.to_json() {
            if let Value::Object(m) = v {
                for (k, v) in m {
                    out.push((format!("{section}.{k}"), v));
                }
            }
        }
        out
    }

    /// `self` with `values` (`section.key` → JSON value) set. Each value is
    /// checked on its own (so every bad one is reported), then the result as
    /// a whole. Returns the new settings or every problem.
    pub fn with_values(&self, values: &[(String, Value)]) -> Result<Settings, Vec<Problem>> {
        let base = self.to_json();
        let mut merged = base.clone();
        let mut problems = Vec::new();
        for (key, v) in values {
            let Some((section, field)) = key.split_once('.') else {
                problems.push(Problem::new(key, "unknown setting"));
                continue;
            };
            let known = base
                .get(section)
                .and_then(Value::as_object)
                .is_some_and(|m| m.contains_key(field));
            if !known {
                problems.push(Problem::new(key, "unknown setting"));
                continue;
            }
            let mut trial = base.clone();
            trial[section][field] = v.clone();
            if let Err(e) = serde_json::from_value::<Settings>(Value::Object(trial)) {
                problems.push(Problem::new(key, clean_serde_message(&e.to_string())));
                continue;
            }
            merged[section][field] = v.clone();
        }
        let settings = match serde_json::from_value::<Settings>(Value::Object(merged)) {
            Ok(s) => s,
            Err(e) => {
                problems.push(Problem::new("configuration", e.to_string()));
                return Err(problems);
            }
        };
        problems.extend(settings.validate());
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }
}

/// serde_json appends "at line 1 column 2" to messages about values that
/// never were text.
fn clean_serde_message(m: &str) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

/// A stored override of one setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Override {
    pub value: Value,
    pub updated_at: String,
    pub updated_by: Option<String>,
}

/// What the server runs with: the start-up values, the stored overrides
/// (`section.key` → override) and the two combined.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    pub startup: Settings,
    pub overrides: BTreeMap<String, Override>,
    pub settings: Settings,
    /// The effective settings when this process started: what the keys
    /// that need a restart are still running with.
    pub at_start: Settings,
}

impl Effective {
    /// The start-up settings overlaid with `overrides`; every problem if the
    /// combination is invalid.
    pub fn overlay(
        startup: Settings,
        overrides: BTreeMap<String, Override>,
    ) -> Result<Effective, Vec<Problem>> {
        let values: Vec<(String, Value)> = overrides
            .iter()
            .map(|(k, o)| (k.clone(), o.value.clone()))
            .collect();
        let settings = startup.with_values(&values)?;
        Ok(Effective {
            startup,
            overrides,
            at_start: settings.clone(),
            settings,
        })
    }

    /// The keys whose configured value differs from what this process runs
    /// with until it restarts.
    pub fn pending_restart(&self) -> Vec<String> {
        let before: BTreeMap<String, Value> = self.at_start.flatten().into_iter().collect();
        self.settings
            .flatten()
            .into_iter()
            .filter(|(k, v)| !applies_live(k) && before.get(k) != Some(v))
            .map(|(k, _)| k)
            .collect()
    }
}

/// The live cell: readers take a snapshot; writers (the configuration
/// tools) hold `writer` across read-modify-write so concurrent updates do
/// not lose each other, and swap the snapshot when the database has it.
#[derive(Clone, Default)]
pub struct Live {
    current: Arc<RwLock<Arc<Effective>>>,
    pub writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("current", &self.get())
            .finish()
    }
}

impl Live {
    pub fn get(&self) -> Arc<Effective> {
        self.current.read().expect("live settings lock").clone()
    }

    pub fn set(&self, e: Effective) {
        *self.current.write().expect("live settings lock") = Arc::new(e);
    }

    /// The effective settings (what consumers such as the lifecycle job
    /// read on every run).
    pub fn settings(&self) -> Settings {
        self.get().settings.clone()
    }
}

/// A minimal YAML rendering of a JSON value (block mappings and sequences;
/// strings double-quoted, which YAML reads as JSON strings). Enough for the
/// flat-ish configuration documents; no extra dependency (`serde_yaml` is
/// unmaintained).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    yaml_into(&mut out, v, 0);
    if out.is_empty() || !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        _ => unreachable!("containers are rendered as blocks"),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn yaml_key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn yaml_into(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                if is_block(v) {
                    out.push_str(&format!("{pad}{}:\n", yaml_key(k)));
                    yaml_into(out, v, indent + 2);
                } else {
                    out.push_str(&format!("{pad}{}: {}\n", yaml_key(k), yaml_scalar(v)));
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for v in a {
                if is_block(v) {
                    out.push_str(&format!("{pad}-\n"));
                    yaml_into(out, v, indent + 2);
                } else {
                    out.push_str(&format!("{pad}- {}\n", yaml_scalar(v)));
                }
            }
        }
        other => {
            out.push_str(&format!("{pad}{}\n", yaml_scalar(other)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_valid_and_ordered() {
        assert!(Settings::default().validate().is_empty());
    }

    #[test]
    fn every_problem_is_reported() {
        let s = Settings::default();
        let e = s
            .with_values(&[
                ("retention.dormant_after".into(), json!("40d")),
                ("retention.purge_after".into(), json!("banana")),
                ("retention.nope".into(), json!("1d")),
                ("backups.max_backups".into(), json!(0)),
            ])
            .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"retention.purge_after"), "{e:?}");
        assert!(fields.contains(&"retention.nope"), "{e:?}");
        assert!(fields.contains(&"retention.expire_after"), "{e:?}");
        assert!(fields.contains(&"backups.max_backups"), "{e:?}");
    }

    #[test]
    fn durations_use_the_largest_whole_unit() {
        for (d, s) in [
            (Duration::from_secs(90 * DAY), "90d"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(duration::format(&d), s);
            assert_eq!(humantime::parse_duration(s).unwrap(), d);
        }
    }

    #[test]
    fn yaml_renders_nested_maps() {
        let y =
            to_yaml(&json!({"retention": {"dormant_after": "7d"}, "n": 1, "l": [1, {"a": true}]}));
        assert!(y.contains("retention:\n  dormant_after: \"7d\"\n"), "{y}");
        assert!(y.contains("l:\n  - 1\n  -\n    a: true\n"), "{y}");
    }
}
