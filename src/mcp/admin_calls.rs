//! Which MCP requests need the admin capability, as one predicate over the
//! raw JSON-RPC message. The HTTP layer applies it before the call, to
//! answer a token without the admin scope with 403 `insufficient_scope`
//! (the MCP authorization's step-up signal); the tools and resources still
//! check the capability themselves (`Ctx::require_admin`), for every
//! transport.

use serde_json::Value;

/// Tools that change what the server does to everyone's data.
pub const ADMIN_TOOLS: [&str; 3] = ["update_configuration", "run_job_now", "update_job_config"];

/// Whether one JSON-RPC message (or any message of a batch) needs admin.
pub fn needs_admin(message: &Value) -> bool {
    match message {
        Value::Array(batch) => batch.iter().any(needs_admin),
        Value::Object(m) => {
            let params = m.get("params").unwrap_or(&Value::Null);
            match m.get("method").and_then(Value::as_str) {
                Some("tools/call") => tool_needs_admin(params),
                Some("resources/read" | "resources/subscribe") => params
                    .get("uri")
                    .and_then(Value::as_str)
                    .is_some_and(super::resources::process_wide_uri),
                _ => false,
            }
        }
        _ => false,
    }
}

fn tool_needs_admin(params: &Value) -> bool {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return false;
    };
    // Spelt as the tools are looked up: the original server's camelCase
    // names (`runJobNow`) reach the same tools.
    let name = super::args::snake_case(name);
    if ADMIN_TOOLS.contains(&name.as_str()) {
        return true;
    }
    // Listing backups changes nothing; create, restore and delete do.
    name == "manage_configuration_backup"
        && params
            .get("arguments")
            .and_then(|a| a.get("action"))
            .and_then(Value::as_str)
            != Some("list")
}

#[cfg(test)]
mod tests {
    use super::needs_admin;
    use serde_json::json;

    fn call(name: &str, args: serde_json::Value) -> serde_json::Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}})
    }

    #[test]
    fn admin_tools_backup_changes_and_process_resources_need_admin() {
        assert!(needs_admin(&call(
            "run_job_now",
            json!({"job_name": "retention"})
        )));
        assert!(needs_admin(&call(
            "manage_configuration_backup",
            json!({"action": "restore"})
        )));
        assert!(!needs_admin(&call(
            "manage_configuration_backup",
            json!({"action": "list"})
        )));
        assert!(!needs_admin(&call(
            "get_context",
            json!({"session_key": "s"})
        )));
        let read = |uri: &str| json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": uri}});
        assert!(needs_admin(&read("handoff://metrics")));
        assert!(needs_admin(&read("handoff://analytics/performance")));
        assert!(!needs_admin(&read("handoff://sessions")));
        // One admin call in a batch makes the batch need admin.
        assert!(needs_admin(&json!([
            call("get_context", json!({})),
            call("update_job_config", json!({}))
        ])));
        assert!(!needs_admin(&json!("not a message")));
    }
}
