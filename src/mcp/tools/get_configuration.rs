//! `get_configuration`: the effective runtime configuration (start-up values
//! overlaid with stored updates), whole or one section, as JSON or YAML.

use handoff_actors::model::{now, rfc3339};
use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::mcp::args::ToolArgs;
use crate::mcp::configuration;
use crate::mcp::context::Ctx;
use crate::settings::{to_yaml, Section};

pub const NAME: &str = "get_configuration";
pub const DESCRIPTION: &str =
    "Read the effective runtime configuration: retention (session lifecycle thresholds), \
monitoring, analytics and backups. include_metadata adds, per key, its default, where its value \
comes from (default, startup, runtime), whether a change applies live or needs a restart, and \
who changed it last. format yaml adds the same document as YAML text.";

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SectionArg {
    Retention,
    Monitoring,
    Analytics,
    Backups,
    #[default]
    All,
}

impl SectionArg {
    pub fn section(self) -> Option<Section> {
        match self {
            SectionArg::Retention => Some(Section::Retention),
            SectionArg::Monitoring => Some(Section::Monitoring),
            SectionArg::Analytics => Some(Section::Analytics),
            SectionArg::Backups => Some(Section::Backups),
            SectionArg::All => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FormatArg {
    #[default]
    Json,
    Yaml,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// retention | monitoring | analytics | backups | all (default).
    pub config_section: Option<SectionArg>,
    /// Add per-key metadata (default false).
    pub include_metadata: Option<bool>,
    /// json (default) or yaml (adds `yaml`, the document as YAML text).
    pub format: Option<FormatArg>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub config_section: SectionArg,
    pub format: FormatArg,
    /// `{section: {key: value}}`; durations are humantime strings.
    pub configuration: Map<String, Value>,
    /// Keys whose configured value differs from what runs until a restart.
    pub pending_restart: Vec<String>,
    /// Per `section.key` (with include_metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The document as YAML (with format yaml).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
    pub retrieved_at: String,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    let section = a.config_section.unwrap_or_default();
    let format = a.format.unwrap_or_default();
    let e = ctx.cfg.live.get();
    let configuration = configuration::sections_json(&e.settings, section.section());
    let metadata = a
        .include_metadata
        .unwrap_or(false)
        .then(|| configuration::metadata(&e, section.section()));
    let yaml = (format == FormatArg::Yaml).then(|| {
        let mut doc = Map::new();
        doc.insert("configuration".into(), Value::Object(configuration.clone()));
        if let Some(m) = &metadata {
            doc.insert("metadata".into(), Value::Object(m.clone()));
        }
        to_yaml(&Value::Object(doc))
    });
    Ok(Out {
        success: true,
        config_section: section,
        format,
        configuration,
        pending_restart: e.pending_restart(),
        metadata,
        yaml,
        retrieved_at: rfc3339(&now()),
    })
}
