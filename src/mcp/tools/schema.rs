//! The published tool schemas made portable: what schemars writes, rewritten
//! into the forms every MCP client's validator accepts (see `portable`).

use rmcp::model::JsonObject;
use serde_json::Value;

/// The published schemas in the portable subset of JSON Schema that every
/// client maps without loss (the MCP Inspector's `--strict` schema lint,
/// clients that translate tool schemas into a single-`type` dialect such as
/// Gemini's function declarations). Each rule rewrites a schema into one
/// that accepts exactly the same values:
///
/// - schemars marks Rust integer widths with formats such as `uint` that
///   validators in clients (ajv in the TypeScript SDK) do not know and warn
///   about on every call; the bounds stay as `minimum`.
/// - A bare boolean schema (`serde_json::Value` comes out as `true`) becomes
///   its object form: `true` is `anyOf` over the six JSON types, `false` is
///   `{"not": {}}`. Booleans under `additionalProperties` and its kin are
///   the usual spelling there and stay.
/// - A schema object with no keyword that constrains the value (only a
///   `description`, say: what schemars writes for a `Value` field) gets the
///   same `anyOf` over the six JSON types, its annotations kept.
/// - `type: [X, "null"]` (schemars' `Option<X>`) becomes `anyOf` with one
///   single-`type` branch per type; the keywords that apply to one type only
///   (`items`, `minimum`, `properties`, ...) move into that type's branch,
///   the rest (`description`, `enum`, ...) stay beside the `anyOf`.
pub(super) fn portable(schema: &JsonObject) -> JsonObject {
    let mut v = Value::Object(schema.clone());
    portable_schema(&mut v, None);
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object stays an object"),
    }
}

/// Keywords whose value is one schema.
const SCHEMA_KEYWORDS: [&str; 12] = [
    "items",
    "contains",
    "not",
    "propertyNames",
    "if",
    "then",
    "else",
    "additionalProperties",
    "unevaluatedProperties",
    "additionalItems",
    "unevaluatedItems",
    "contentSchema",
];
/// Keywords whose value is a list of schemas.
const SCHEMA_LIST_KEYWORDS: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to schemas.
const SCHEMA_MAP_KEYWORDS: [&str; 6] = [
    "properties",
    "patternProperties",
    "dependentSchemas",
    "dependencies",
    "$defs",
    "definitions",
];
/// Where a boolean is the ordinary spelling ("other properties: allowed").
const BOOLEAN_KEYWORDS: [&str; 4] = [
    "additionalProperties",
    "unevaluatedProperties",
    "additionalItems",
    "unevaluatedItems",
];
/// The keywords that restrict the values a schema accepts; a schema with
/// none of them accepts anything. (`if` restricts only with `then`/`else`.)
const CONSTRAINING_KEYWORDS: [&str; 43] = [
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "format",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "items",
    "prefixItems",
    "contains",
    "additionalItems",
    "unevaluatedItems",
    "properties",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "dependentSchemas",
    "dependencies",
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
];

/// Whether a schema object holds a keyword that restricts the values it
/// accepts (annotations such as `description` do not); `if` counts only
/// with `then` or `else`. The MCP Inspector's schema lint uses the same rule.
fn constrains(m: &JsonObject) -> bool {
    CONSTRAINING_KEYWORDS.iter().any(|k| m.contains_key(*k))
        || (m.contains_key("if") && (m.contains_key("then") || m.contains_key("else")))
}

/// The keywords that only ever apply to values of one JSON type (a
/// `minimum` says nothing about a string), by that type.
fn type_keywords(ty: &str) -> &'static [&'static str] {
    match ty {
        "string" => &[
            "minLength",
            "maxLength",
            "pattern",
            "format",
            "contentEncoding",
            "contentMediaType",
            "contentSchema",
        ],
        "number" | "integer" => &[
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
        ],
        "array" => &[
            "items",
            "prefixItems",
            "additionalItems",
            "unevaluatedItems",
            "contains",
            "minContains",
            "maxContains",
            "minItems",
            "maxItems",
            "uniqueItems",
        ],
        "object" => &[
            "properties",
            "patternProperties",
            "additionalProperties",
            "unevaluatedProperties",
            "propertyNames",
            "required",
            "minProperties",
            "maxProperties",
            "dependentRequired",
            "dependentSchemas",
            "dependencies",
        ],
        _ => &[],
    }
}

/// `anyOf` over these accepts every JSON value (`integer` is in `number`).
const JSON_TYPES: [&str; 6] = ["object", "array", "string", "number", "boolean", "null"];

fn any_json() -> Value {
    Value::Array(
        JSON_TYPES
            .iter()
            .map(|t| serde_json::json!({ "type": t }))
            .collect(),
    )
}

/// Rewrite the schema `v`, reached through `keyword`, and every schema in
/// it (see `portable`).
fn portable_schema(v: &mut Value, keyword: Option<&str>) {
    if let Value::Bool(b) = v {
        if keyword.is_some_and(|k| BOOLEAN_KEYWORDS.contains(&k)) {
            return;
        }
        *v = if *b {
            serde_json::json!({ "anyOf": any_json() })
        } else {
            serde_json::json!({ "not": {} })
        };
        return;
    }
    let Value::Object(m) = v else { return };
    let numeric = m.get("format").and_then(Value::as_str).is_some_and(|f| {
        f.starts_with("uint") || f.starts_with("int") || f == "double" || f == "float"
    });
    if numeric {
        m.remove("format");
    }
    if let Some(Value::Array(types)) = m.get("type").cloned() {
        split_type_union(m, types);
    }
    // Under `not`, "accepts anything" is the point (`{"not": {}}` is false).
    if !constrains(m) && keyword != Some("not") {
        m.insert("anyOf".into(), any_json());
    }
    for k in SCHEMA_KEYWORDS {
        match m.get_mut(k) {
            // draft-07's tuple form: one schema per position.
            Some(Value::Array(tuple)) if k == "items" => {
                tuple.iter_mut().for_each(|s| portable_schema(s, Some(k)));
            }
            Some(s) => portable_schema(s, Some(k)),
            None => {}
        }
    }
    for k in SCHEMA_LIST_KEYWORDS {
        if let Some(Value::Array(list)) = m.get_mut(k) {
            list.iter_mut().for_each(|s| portable_schema(s, Some(k)));
        }
    }
    for k in SCHEMA_MAP_KEYWORDS {
        if let Some(Value::Object(map)) = m.get_mut(k) {
            // `dependencies` may also map a name to a list of names.
            map.values_mut().for_each(|s| portable_schema(s, Some(k)));
        }
    }
}

/// `{"type": [A, B], kw...}` → `{"anyOf": [{"type": A, A's kw}, {"type": B,
/// B's kw}], other kw}`: the same values, one `type` per branch.
fn split_type_union(m: &mut JsonObject, types: Vec<Value>) {
    let mut names: Vec<&str> = Vec::new();
    for t in &types {
        match t.as_str() {
            Some(t) if !names.contains(&t) => names.push(t),
            Some(_) => {}
            // Not a list of type names: leave it for a validator to refuse.
            None => return,
        }
    }
    if names.is_empty() {
        return;
    }
    m.remove("type");
    if let [only] = names[..] {
        m.insert("type".into(), only.into());
        return;
    }
    let mut branches: Vec<JsonObject> = names
        .iter()
        .map(|t| {
            let mut b = JsonObject::new();
            b.insert("type".into(), (*t).into());
            b
        })
        .collect();
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        let owners: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(_, t)| type_keywords(t).contains(&k.as_str()))
            .map(|(i, _)| i)
            .collect();
        // A keyword for a type outside the union stays where it was (it
        // was vacuous there and stays so).
        if owners.is_empty() {
            continue;
        }
        let value = m.remove(&k).expect("key listed from the map");
        for i in owners {
            branches[i].insert(k.clone(), value.clone());
        }
    }
    let any_of = Value::Array(branches.into_iter().map(Value::Object).collect());
    if m.contains_key("anyOf") {
        // Both must hold: the union joins any `allOf` there is.
        let all = m.entry("allOf").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(all) = all {
            all.push(serde_json::json!({ "anyOf": any_of }));
        }
    } else {
        m.insert("anyOf".into(), any_of);
    }
}

/// The server accepts camelCase spellings and (by policy) unknown fields
/// and reports them itself, with the contract's error; a client that checks
/// arguments against the schema must not refuse them first.
pub(super) fn lenient_input(mut schema: JsonObject) -> JsonObject {
    schema.remove("additionalProperties");
    schema
}

/// The schema of a failed call, derived from the type the reply is built
/// from (`reply::ToolError`).
pub(super) fn error_schema() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12();
    let schema = settings
        .into_generator()
        .into_root_schema_for::<crate::mcp::reply::ToolError>();
    let mut v = Value::from(schema);
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
    }
    v
}

/// A failed call carries the error object as `structuredContent`, and
/// clients (the TypeScript SDK) check it against `outputSchema` even when
/// `isError` is set: the published schema is "success shape or error shape".
pub(super) fn with_error_shape(success: JsonObject, error: &Value) -> JsonObject {
    let mut success = success;
    let schema_uri = success.remove("$schema");
    let mut defs = match success.remove("$defs") {
        Some(Value::Object(d)) => d,
        _ => JsonObject::new(),
    };
    defs.insert("ToolError".into(), error.clone());
    let mut out = JsonObject::new();
    if let Some(uri) = schema_uri {
        out.insert("$schema".into(), uri);
    }
    out.insert("type".into(), "object".into());
    // What both shapes share, visible without resolving the anyOf.
    out.insert(
        "properties".into(),
        serde_json::json!({"success": {"type": "boolean", "description": "true on success; false with isError on failure"}}),
    );
    out.insert("required".into(), serde_json::json!(["success"]));
    out.insert(
        "anyOf".into(),
        Value::Array(vec![
            Value::Object(success),
            serde_json::json!({"$ref": "#/$defs/ToolError"}),
        ]),
    );
    out.insert("$defs".into(), Value::Object(defs));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "test-hooks")]
    use crate::mcp::tools::debug_panic_job;
    use crate::mcp::tools::Catalog;

    /// Keywords whose value is a schema, a list of schemas, or a map of
    /// schemas (JSON Schema 2020-12 and draft-07).
    const ONE: [&str; 12] = [
        "items",
        "contains",
        "not",
        "propertyNames",
        "if",
        "then",
        "else",
        "additionalProperties",
        "unevaluatedProperties",
        "additionalItems",
        "unevaluatedItems",
        "contentSchema",
    ];
    const LIST: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
    const MAP: [&str; 6] = [
        "properties",
        "patternProperties",
        "dependentSchemas",
        "dependencies",
        "$defs",
        "definitions",
    ];
    /// Where a bare boolean is the usual spelling, not a schema to flag.
    const BOOLEAN_OK: [&str; 4] = [
        "additionalProperties",
        "unevaluatedProperties",
        "additionalItems",
        "unevaluatedItems",
    ];

    /// The non-portable forms under `v` (a schema reached through
    /// `keyword`): a bare boolean schema, a `type` array, a schema object
    /// with no keyword that constrains the value.
    fn unportable(v: &Value, keyword: Option<&str>, path: &str, out: &mut Vec<String>) {
        let m = match v {
            Value::Bool(_) if keyword.is_some_and(|k| BOOLEAN_OK.contains(&k)) => return,
            Value::Bool(b) => return out.push(format!("{path}: bare `{b}` schema")),
            Value::Object(m) => m,
            _ => return,
        };
        if m.get("type").is_some_and(Value::is_array) {
            out.push(format!("{path}: `type` is an array ({})", m["type"]));
        }
        if keyword != Some("not") && !constrains(m) {
            out.push(format!("{path}: no keyword constrains the value"));
        }
        for k in ONE {
            match m.get(k) {
                Some(Value::Array(tuple)) if k == "items" => {
                    for (i, s) in tuple.iter().enumerate() {
                        unportable(s, Some(k), &format!("{path}.{k}[{i}]"), out);
                    }
                }
                Some(s) => unportable(s, Some(k), &format!("{path}.{k}"), out),
                None => {}
            }
        }
        for k in LIST {
            for (i, s) in m
                .get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                unportable(s, Some(k), &format!("{path}.{k}[{i}]"), out);
            }
        }
        for k in MAP {
            for (name, s) in m.get(k).and_then(Value::as_object).into_iter().flatten() {
                unportable(s, Some(k), &format!("{path}.{k}.{name}"), out);
            }
        }
    }

    #[test]
    fn portable_rewrites_keep_the_accepted_values() {
        let before = serde_json::json!({
            "type": "object",
            "properties": {
                "n": {"type": ["integer", "null"], "minimum": 0, "format": "uint32", "description": "d"},
                "xs": {"type": ["array", "null"], "items": true},
                "any": {"description": "anything"},
                "never": false,
                "m": {"type": "object", "additionalProperties": true},
                "both": {"type": ["string", "null"], "anyOf": [{"minLength": 1}, {"type": "null"}]}
            },
            "additionalProperties": false
        });
        let Value::Object(before) = before else {
            unreachable!()
        };
        let any = serde_json::json!([{"type": "object"}, {"type": "array"}, {"type": "string"},
            {"type": "number"}, {"type": "boolean"}, {"type": "null"}]);
        assert_eq!(
            Value::Object(portable(&before)),
            serde_json::json!({
                "type": "object",
                "properties": {
                    "n": {"description": "d", "anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
                    "xs": {"anyOf": [{"type": "array", "items": {"anyOf": any}}, {"type": "null"}]},
                    "any": {"description": "anything", "anyOf": any},
                    "never": {"not": {}},
                    "m": {"type": "object", "additionalProperties": true},
                    "both": {
                        "anyOf": [{"minLength": 1}, {"type": "null"}],
                        "allOf": [{"anyOf": [{"type": "string"}, {"type": "null"}]}]
                    }
                },
                "additionalProperties": false
            })
        );
    }

    #[test]
    fn published_schemas_are_portable() {
        let cat = Catalog::new(true);
        #[cfg(feature = "test-hooks")]
        assert!(cat.tools.iter().any(|t| t.name == debug_panic_job::NAME));
        let mut problems = Vec::new();
        for t in &cat.tools {
            let input = Value::Object((*t.input_schema).clone());
            unportable(
                &input,
                None,
                &format!("{}.inputSchema", t.name),
                &mut problems,
            );
            let output = t
                .output_schema
                .as_ref()
                .expect("every tool has an outputSchema");
            let output = Value::Object((**output).clone());
            unportable(
                &output,
                None,
                &format!("{}.outputSchema", t.name),
                &mut problems,
            );
        }
        assert!(
            problems.is_empty(),
            "{} non-portable forms:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}
