//! `arguments` of every tool, decoded as a call decodes them (spellings,
//! unknown fields, types, then the identifier and size checks): never a
//! panic, whatever the JSON.
#![no_main]

use std::sync::OnceLock;

use handoff::config::{Config, UnknownFields};
use handoff::mcp::args;
use handoff::mcp::tools::Catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static CATALOG: OnceLock<(Catalog, Vec<String>, Config)> = OnceLock::new();
    let (catalog, names, cfg) = CATALOG.get_or_init(|| {
        let c = Catalog::new(true);
        let names = c.tools.iter().map(|t| t.name.to_string()).collect();
        (c, names, Config::default())
    });
    let Some((&pick, json)) = data.split_first() else { return };
    let Ok(serde_json::Value::Object(raw)) = serde_json::from_slice::<serde_json::Value>(json)
    else {
        return;
    };
    let name = &names[pick as usize % names.len()];
    for policy in [UnknownFields::Reject, UnknownFields::Ignore] {
        let decoded = catalog.decode(name, Some(raw.clone()), policy);
        assert!(decoded.is_some(), "a listed tool decodes");
    }
    // The checks every tool applies to the strings it is given.
    for v in raw.values() {
        if let Some(s) = v.as_str() {
            let _ = args::session_key(cfg, s);
            let _ = args::agent_id(cfg, "agent", s);
            let _ = args::content(cfg, "content", s);
        }
        let _ = args::metadata(cfg, "metadata", &Some(v.clone()));
    }
});
