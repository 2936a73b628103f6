//! Rust: `use` / `extern crate` / `mod name;` imports and the items at the
//! top level of the file (brace depth 0).

use super::scan::{self, ident, keyword, squash, Line, Quote, Syntax};
use super::{Extracted, Import, ImportKind, Symbol, SymbolKind};

pub static SYNTAX: Syntax = Syntax {
    line_comments: &["//"],
    block_comment: Some(("/*", "*/")),
    nested_block_comments: true,
    quotes: &[Quote {
        open: "\"",
        close: "\"",
        multiline: true,
        escapes: true,
    }],
    rust_literals: true,
    js_regex: false,
};

/// A statement that spans lines (`use a::{\n b,\n c\n};`) is read up to this
/// many lines.
const MAX_STATEMENT_LINES: usize = 200;

/// Strip leading attributes (`#[derive(Debug)]`, `#![allow(x)]`).
fn strip_attributes(mut s: &str) -> &str {
    loop {
        let t = s.trim_start();
        let body = t.strip_prefix("#!").or_else(|| t.strip_prefix('#'));
        let Some(body) = body.filter(|b| b.trim_start().starts_with('[')) else {
            return t;
        };
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in body.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        match end {
            Some(e) => s = &body[e..],
            None => return "", // an attribute continuing on the next line
        }
    }
}

/// Strip `pub`, `pub(crate)`, `pub(in a::b)`; returns (is_pub, rest).
fn strip_visibility(s: &str) -> (bool, &str) {
    let Some(rest) = keyword(s, "pub") else {
        return (false, s);
    };
    if let Some(inner) = rest.strip_prefix('(') {
        if let Some(close) = inner.find(')') {
            return (true, inner[close + 1..].trim_start());
        }
    }
    (true, rest)
}

/// The text of a statement from line `i` (starting at `code`) up to its
/// `;`, joined; and the index of the line holding the `;`.
fn statement(lines: &[Line], i: usize, code: &str) -> (String, usize) {
    let mut text = String::from(code);
    let mut j = i;
    while !text.contains(';') && j + 1 < lines.len() && j - i < MAX_STATEMENT_LINES {
        j += 1;
        text.push(' ');
        text.push_str(&lines[j].code);
    }
    let body = text.split(';').next().unwrap_or("");
    (body.to_string(), j)
}

/// `a::{ b, c, }` → `a::{b, c}`.
fn tidy_path(s: &str) -> String {
    let mut t = squash(s);
    for (from, to) in [
        ("{ ", "{"),
        (" }", "}"),
        (":: ", "::"),
        (" ::", "::"),
        (",}", "}"),
    ] {
        while t.contains(from) {
            t = t.replace(from, to);
        }
    }
    t
}

/// The `impl` header after `impl`: generics dropped, up to `{` or `where`.
fn impl_name(rest: &str) -> String {
    let mut s = rest;
    if s.starts_with('<') {
        let mut depth = 0usize;
        for (i, c) in s.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        s = &s[i + 1..];
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    let end = s.find('{').unwrap_or(s.len());
    let mut head = &s[..end];
    if let Some(w) = head.find(" where") {
        head = &head[..w];
    }
    squash(head)
}

pub fn extract(lines: &[Line]) -> Extracted {
    let depth = scan::depths(lines, b'{', b'}');
    let mut ex = Extracted::default();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        if depth[i] != 0 {
            i += 1;
            continue;
        }
        let code = strip_attributes(&lines[i].code);
        let (public, mut rest) = strip_visibility(code);
        let sym = |kind, name: &str| Symbol {
            kind,
            name: name.to_string(),
            line: line_no,
            exported: public,
        };
        // Qualifiers before `fn`, `impl`, `trait`.
        loop {
            if let Some(r) = keyword(rest, "async")
                .or_else(|| keyword(rest, "unsafe"))
                .or_else(|| keyword(rest, "default"))
            {
                rest = r;
                continue;
            }
            if let Some(r) = keyword(rest, "const") {
                if keyword(r, "fn").is_some()
                    || keyword(r, "unsafe").is_some()
                    || keyword(r, "async").is_some()
                    || keyword(r, "extern").is_some()
                {
                    rest = r;
                    continue;
                }
            }
            if let Some(r) = keyword(rest, "extern") {
                if keyword(r, "crate").is_some() {
                    break;
                }
                // `extern "C" fn` / `extern "C" {`: skip the ABI string.
                let r = match r.strip_prefix('"') {
                    Some(abi) => abi.find('"').map_or(abi, |q| abi[q + 1..].trim_start()),
                    None => r,
                };
                rest = r;
                continue;
            }
            break;
        }

        if let Some(r) = keyword(rest, "use") {
            let (body, end) = statement(lines, i, r);
            let module = tidy_path(&body);
            if !module.is_empty() {
                ex.imports.push(Import {
                    module,
                    kind: ImportKind::Use,
                    line: line_no,
                });
            }
            i = end + 1;
            continue;
        }
        if let Some(r) = keyword(rest, "extern").and_then(|r| keyword(r, "crate")) {
            if let Some(name) = ident(r) {
                ex.imports.push(Import {
                    module: name.to_string(),
                    kind: ImportKind::ExternCrate,
                    line: line_no,
                });
            }
        } else if let Some(r) = keyword(rest, "fn") {
            if let Some(n) = ident(r) {
                ex.symbols.push(sym(SymbolKind::Function, n));
            }
        } else if let Some(r) = keyword(rest, "mod") {
            if let Some(n) = ident(r) {
                ex.symbols.push(sym(SymbolKind::Module, n));
                if r[n.len()..].trim_start().starts_with(';') {
                    ex.imports.push(Import {
                        module: n.to_string(),
                        kind: ImportKind::Mod,
                        line: line_no,
                    });
                }
            }
        } else if let Some(r) = keyword(rest, "impl") {
            let name = impl_name(r);
            if !name.is_empty() {
                ex.symbols.push(sym(SymbolKind::Impl, &name));
            }
        } else if let Some(r) = keyword(rest, "macro_rules!")
            .or_else(|| rest.strip_prefix("macro_rules!").map(str::trim_start))
        {
            if let Some(n) = ident(r) {
                ex.symbols.push(sym(SymbolKind::Macro, n));
            }
        } else if let Some(r) = keyword(rest, "static") {
            let r = keyword(r, "mut").unwrap_or(r);
            if let Some(n) = ident(r) {
                ex.symbols.push(sym(SymbolKind::Static, n));
            }
        } else {
            let r = keyword(rest, "auto").unwrap_or(rest);
            for (kw, kind) in [
                ("struct", SymbolKind::Struct),
                ("enum", SymbolKind::Enum),
                ("union", SymbolKind::Union),
                ("trait", SymbolKind::Trait),
                ("type", SymbolKind::Type),
                ("const", SymbolKind::Const),
            ] {
                if let Some(n) = keyword(r, kw).and_then(ident) {
                    ex.symbols.push(sym(kind, n));
                    break;
                }
            }
        }
        i += 1;
    }
    ex
}

#[cfg(test)]
mod tests {
    use super::super::{analyze, ImportKind, Language, SymbolKind};

    const SRC: &str = r##"//! Crate docs mentioning fn fake() and use fake::thing;
#![allow(dead_code)]
extern crate alloc;
use std::collections::{
    HashMap,
    HashSet,
};
use serde::Serialize;
pub use crate::model::Thing as T;
mod util;
pub(crate) mod inline {
    use super::*;
    pub fn nested() {}
}

/// A doc comment: struct NotReal;
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
}

enum Mode { A, B }
pub trait Greet { fn hi(&self); }
impl<T: Clone> Greet for Wrapper<T> where T: Send {
    fn hi(&self) {}
}
impl Config {
    pub const fn new() -> Self { todo!() }
}
pub const LIMIT: usize = 10;
static mut COUNTER: u32 = 0;
pub type Result<T> = std::result::Result<T, Error>;
pub async unsafe fn run<'a>(x: &'a str) -> char { let _ = "fn not_this() {"; '{' }
const fn helper() {}
extern "C" fn callback() {}
macro_rules! my_macro { () => {} }
fn main() {
    let s = r#"
fn inside_raw_string() {}
"#;
}
"##;

    #[test]
    fn imports_and_top_level_symbols() {
        let a = analyze(Language::Rust, SRC);
        let imports: Vec<(&str, ImportKind)> = a
            .imports
            .iter()
            .map(|i| (i.module.as_str(), i.kind))
            .collect();
        assert_eq!(
            imports,
            vec![
                ("alloc", ImportKind::ExternCrate),
                ("std::collections::{HashMap, HashSet}", ImportKind::Use),
                ("serde::Serialize", ImportKind::Use),
                ("crate::model::Thing as T", ImportKind::Use),
                ("util", ImportKind::Mod),
            ]
        );
        assert_eq!(a.imports[1].line, 4);
        assert_eq!(a.dependencies, vec!["alloc", "serde", "std"]);

        let symbols: Vec<(SymbolKind, &str, bool)> = a
            .symbols
            .iter()
            .map(|s| (s.kind, s.name.as_str(), s.exported))
            .collect();
        assert_eq!(
            symbols,
            vec![
                (SymbolKind::Module, "util", false),
                (SymbolKind::Module, "inline", true),
                (SymbolKind::Struct, "Config", true),
                (SymbolKind::Enum, "Mode", false),
                (SymbolKind::Trait, "Greet", true),
                (SymbolKind::Impl, "Greet for Wrapper<T>", false),
                (SymbolKind::Impl, "Config", false),
                (SymbolKind::Const, "LIMIT", true),
                (SymbolKind::Static, "COUNTER", false),
                (SymbolKind::Type, "Result", true),
                (SymbolKind::Function, "run", true),
                (SymbolKind::Function, "helper", false),
                (SymbolKind::Function, "callback", false),
                (SymbolKind::Macro, "my_macro", false),
                (SymbolKind::Function, "main", false),
            ]
        );
        let config = a.symbols.iter().find(|s| s.name == "Config").unwrap();
        assert_eq!(config.line, 18);
    }
}
