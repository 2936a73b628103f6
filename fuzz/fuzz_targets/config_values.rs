//! Runtime configuration values as `update_configuration` and a backup
//! restore apply them: a map of `section.key` to any JSON value. Never a
//! panic; whatever is accepted lies inside the floors and ceilings.
#![no_main]

use handoff::settings::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(data)
    else {
        return;
    };
    let values: Vec<(String, serde_json::Value)> = m.into_iter().collect();
    if let Ok(s) = Settings::default().with_values(&values) {
        assert!(s.validate().is_empty());
        // What is accepted is stored and read back the same.
        let back: Settings = serde_json::from_str(&s.canonical_json()).expect("round trip");
        assert_eq!(back, s);
    }
    // A whole backup body.
    if let Ok(s) = serde_json::from_slice::<Settings>(data) {
        let _ = s.validate();
    }
});
