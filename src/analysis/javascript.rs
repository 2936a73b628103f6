//! TypeScript and JavaScript: `import … from '…'`, `import '…'`,
//! `export … from '…'`, `require('…')`, `import('…')`, and the declarations
//! at the top level of the module.

use super::scan::{self, ident, ident_char, keyword, string_at, Line, Quote, Syntax};
use super::{Extracted, Import, ImportKind, Symbol, SymbolKind};

pub static SYNTAX: Syntax = Syntax {
    line_comments: &["//"],
    block_comment: Some(("/*", "*/")),
    nested_block_comments: false,
    quotes: &[
        Quote {
            open: "`",
            close: "`",
            multiline: true,
            escapes: true,
        },
        Quote {
            open: "\"",
            close: "\"",
            multiline: false,
            escapes: true,
        },
        Quote {
            open: "'",
            close: "'",
            multiline: false,
            escapes: true,
        },
    ],
    rust_literals: false,
    js_regex: true,
};

/// An import or export statement is followed over at most this many lines.
const MAX_STATEMENT_LINES: usize = 100;

/// Keywords that start a declaration at column 0; such a line is taken as
/// top level even when the brace count says otherwise (JSX text with an
/// apostrophe can hide a brace from the lexer; this resynchronises).
const DECL_STARTS: [&str; 12] = [
    "import",
    "export",
    "function",
    "class",
    "interface",
    "type",
    "enum",
    "const",
    "let",
    "var",
    "declare",
    "async",
];

/// Lines `i..` joined (masked and original, same offsets).
fn window(lines: &[Line], i: usize) -> (String, String) {
    let end = (i + MAX_STATEMENT_LINES).min(lines.len());
    let code = lines[i..end]
        .iter()
        .map(|l| l.code.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let text = lines[i..end]
        .iter()
        .map(|l| l.text)
        .collect::<Vec<_>>()
        .join("\n");
    (code, text)
}

/// The offset just after the bracket matching the `{` at `open`.
fn matching_brace(code: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `export … from '…'`: the module, if this export statement re-exports.
/// `at` is the offset just after `export` in the window.
fn re_export(code: &str, text: &str, at: usize) -> Option<String> {
    let after = &code[at..];
    let trimmed = after.trim_start();
    let mut pos = at + (after.len() - trimmed.len());
    let mut t = trimmed;
    if let Some(r) = keyword(t, "type") {
        pos += t.len() - r.len();
        t = r;
    }
    let end = if t.starts_with('*') {
        // `export * from 'm'` / `export * as ns from 'm'`
        let f = t.find("from")?;
        pos + f
    } else if t.starts_with('{') {
        matching_brace(code, pos)?
    } else {
        return None;
    };
    let rest = code[end..].trim_start();
    keyword(rest, "from")?;
    string_at(code, text, end).map(|(m, _)| m)
}

/// `require('m')` and `import('m')` anywhere on a line.
fn calls(l: &Line, line_no: usize, out: &mut Vec<Import>) {
    for (name, kind) in [
        ("require", ImportKind::Require),
        ("import", ImportKind::DynamicImport),
    ] {
        let mut from = 0;
        while let Some(p) = l.code[from..].find(name) {
            let start = from + p;
            from = start + name.len();
            let before_ok = l.code[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !ident_char(c) && c != '.');
            let after = l.code[from..].trim_start();
            if !before_ok || !after.starts_with('(') {
                continue;
            }
            let open = l.code.len() - after.len();
            let inner = l.code[open + 1..].trim_start();
            if !inner.starts_with(['\'', '"', '`']) {
                continue;
            }
            if let Some((m, _)) = string_at(&l.code, l.text, open + 1) {
                out.push(Import {
                    module: m,
                    kind,
                    line: line_no,
                });
            }
        }
    }
}

/// The names a `const`/`let`/`var` declaration binds (destructuring
/// included, one level).
fn bound_names(rest: &str) -> Vec<String> {
    if let Some(n) = ident(rest) {
        return vec![n.to_string()];
    }
    let Some(open) = rest.chars().next().filter(|c| *c == '{' || *c == '[') else {
        return Vec::new();
    };
    let close = if open == '{' { '}' } else { ']' };
    let inner = &rest[1..rest.find(close).unwrap_or(rest.len())];
    inner
        .split(',')
        .filter_map(|part| {
            let part = part.trim().trim_start_matches("...");
            let part = part.rsplit(':').next().unwrap_or(part);
            let part = part.split('=').next().unwrap_or(part).trim();
            ident(part).map(str::to_string)
        })
        .collect()
}

fn declaration(s: &str, exported: bool, line: usize, out: &mut Vec<Symbol>) {
    let sym = |kind, name: &str| Symbol {
        kind,
        name: name.to_string(),
        line,
        exported,
    };
    let mut s = s;
    let mut default = false;
    loop {
        if let Some(r) = keyword(s, "declare")
            .or_else(|| keyword(s, "async"))
            .or_else(|| keyword(s, "abstract"))
        {
            s = r;
        } else if let Some(r) = keyword(s, "default").filter(|_| exported) {
            default = true;
            s = r;
        } else {
            break;
        }
    }
    let named = |r: &str| ident(r).map(str::to_string);
    if let Some(r) = keyword(s, "function") {
        let r = r.trim_start_matches('*').trim_start();
        let n = named(r).unwrap_or_else(|| "default".into());
        if default || n != "default" {
            out.push(sym(SymbolKind::Function, &n));
        }
    } else if let Some(r) = keyword(s, "class") {
        let n = named(r)
            .filter(|n| n != "extends" && n != "implements")
            .unwrap_or_else(|| "default".into());
        if default || n != "default" {
            out.push(sym(SymbolKind::Class, &n));
        }
    } else if default {
        let n = named(s)
            .filter(|n| s[n.len()..].trim_start().is_empty() || s[n.len()..].trim() == ";")
            .unwrap_or_else(|| "default".into());
        out.push(sym(SymbolKind::ExportDefault, &n));
    } else if let Some(n) = keyword(s, "interface").and_then(ident) {
        out.push(sym(SymbolKind::Interface, n));
    } else if let Some(r) = keyword(s, "type") {
        if let Some(n) = ident(r) {
            if r[n.len()..].trim_start().starts_with(['=', '<']) {
                out.push(sym(SymbolKind::Type, n));
            }
        }
    } else if let Some(n) = keyword(s, "enum").and_then(ident) {
        out.push(sym(SymbolKind::Enum, n));
    } else if let Some(r) = keyword(s, "namespace").or_else(|| keyword(s, "module")) {
        if let Some(n) = ident(r) {
            out.push(sym(SymbolKind::Namespace, n));
        }
    } else {
        for (kw, kind) in [
            ("const", SymbolKind::Const),
            ("let", SymbolKind::Let),
            ("var", SymbolKind::Var),
        ] {
            if let Some(r) = keyword(s, kw) {
                if let Some(n) = keyword(r, "enum").and_then(ident) {
                    out.push(sym(SymbolKind::Enum, n));
                } else {
                    for n in bound_names(r) {
                        out.push(sym(kind, &n));
                    }
                }
                break;
            }
        }
    }
}

pub fn extract(lines: &[Line]) -> Extracted {
    let depth = scan::depths(lines, b'{', b'}');
    let mut ex = Extracted::default();
    // How far the brace count has drifted, corrected at column-0
    // declarations.
    let mut offset = 0usize;
    for (i, l) in lines.iter().enumerate() {
        let line_no = i + 1;
        calls(l, line_no, &mut ex.imports);
        let t = l.code.trim_start();
        let column0 = t.len() == l.code.len();
        if depth[i] < offset || (column0 && DECL_STARTS.iter().any(|k| keyword(t, k).is_some())) {
            offset = depth[i];
        }
        if depth[i] != offset {
            continue;
        }
        let start = l.code.len() - t.len();
        if let Some(r) = keyword(t, "import") {
            if r.starts_with(['(', '.']) {
                continue; // dynamic import (handled above) or import.meta
            }
            let (code, text) = window(lines, i);
            let after = start + "import".len();
            // Stop at the statement's end so a bare `import x = y` does not
            // borrow a later line's string.
            let stop = code[after..].find(';').map_or(code.len(), |p| after + p);
            let (code, text) = (&code[..stop], text.get(..stop).unwrap_or(&text));
            if let Some((m, _)) = string_at(code, text, after) {
                ex.imports.push(Import {
                    module: m,
                    kind: ImportKind::Import,
                    line: line_no,
                });
            }
        } else if let Some(r) = keyword(t, "export") {
            let (code, text) = window(lines, i);
            if let Some(m) = re_export(&code, &text, start + "export".len()) {
                ex.imports.push(Import {
                    module: m,
                    kind: ImportKind::ReExport,
                    line: line_no,
                });
            } else {
                declaration(r, true, line_no, &mut ex.symbols);
            }
        } else {
            declaration(t, false, line_no, &mut ex.symbols);
        }
    }
    ex
}

#[cfg(test)]
mod tests {
    use super::super::{analyze, ImportKind, Language, SymbolKind};

    const SRC: &str = r#"// import fake from 'nope';
import React, { useState } from "react";
import {
  a,
  b,
} from './local';
import type { Foo } from '@scope/types/foo';
import './side-effect.css';
import fs = require('fs');
const path = require("path");
export * from './all';
export { x, y as z } from "./xy";
export { localOnly };
/* export const hidden = 1; */
export default function App() {
  const inner = 1;
  const url = `http://example.com/${inner}`;
  return <div>Don't {inner}</div>;
}
export interface Props { name: string }
export type Id = string | number;
type Local<T> = T[];
export enum Color { Red, Green }
export const { alpha, beta: renamed } = obj;
let counter = 0;
var legacy = /import x from 'regex'/g;
class Widget extends Base {
  method() { return import('./lazy'); }
}
export async function load() {}
export abstract class Shape {}
declare namespace NS {}
const s = "function notReal() {}";
"#;

    #[test]
    fn imports_and_top_level_declarations() {
        let a = analyze(Language::Typescript, SRC);
        let imports: Vec<(&str, ImportKind, usize)> = a
            .imports
            .iter()
            .map(|i| (i.module.as_str(), i.kind, i.line))
            .collect();
        assert_eq!(
            imports,
            vec![
                ("react", ImportKind::Import, 2),
                ("./local", ImportKind::Import, 3),
                ("@scope/types/foo", ImportKind::Import, 7),
                ("./side-effect.css", ImportKind::Import, 8),
                ("fs", ImportKind::Require, 9),
                ("path", ImportKind::Require, 10),
                ("./all", ImportKind::ReExport, 11),
                ("./xy", ImportKind::ReExport, 12),
                ("./lazy", ImportKind::DynamicImport, 28),
            ]
        );
        assert_eq!(a.dependencies, vec!["@scope/types", "fs", "path", "react"]);

        let symbols: Vec<(SymbolKind, &str, bool)> = a
            .symbols
            .iter()
            .map(|s| (s.kind, s.name.as_str(), s.exported))
            .collect();
        assert_eq!(
            symbols,
            vec![
                (SymbolKind::Const, "path", false),
                (SymbolKind::Function, "App", true),
                (SymbolKind::Interface, "Props", true),
                (SymbolKind::Type, "Id", true),
                (SymbolKind::Type, "Local", false),
                (SymbolKind::Enum, "Color", true),
                (SymbolKind::Const, "alpha", true),
                (SymbolKind::Const, "renamed", true),
                (SymbolKind::Let, "counter", false),
                (SymbolKind::Var, "legacy", false),
                (SymbolKind::Class, "Widget", false),
                (SymbolKind::Function, "load", true),
                (SymbolKind::Class, "Shape", true),
                (SymbolKind::Namespace, "NS", false),
                (SymbolKind::Const, "s", false),
            ]
        );
    }

    #[test]
    fn jsx_apostrophes_do_not_hide_later_declarations() {
        let src = "const App = () => (\n  <div>\n    {items.map(i => <li>Don't {i}</li>)}\n  </div>\n);\nexport function after() {}\n";
        let a = analyze(Language::Javascript, src);
        let names: Vec<&str> = a.symbols.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["App", "after"]);
    }

    #[test]
    fn crlf_multiline_import() {
        let src = "const t = `a\r\nb`;\r\nimport {\r\n  x,\r\n} from 'mod';\r\n";
        let a = analyze(Language::Typescript, src);
        assert_eq!(a.imports.len(), 1);
        assert_eq!(a.imports[0].module, "mod");
        assert_eq!(a.imports[0].line, 3);
    }

    #[test]
    fn export_default_forms() {
        let a = analyze(
            Language::Javascript,
            "export default class {}\nexport default foo;\nexport default { a: 1 };\nmodule.exports = { x };\n",
        );
        let symbols: Vec<(SymbolKind, &str)> = a
            .symbols
            .iter()
            .map(|s| (s.kind, s.name.as_str()))
            .collect();
        assert_eq!(
            symbols,
            vec![
                (SymbolKind::Class, "default"),
                (SymbolKind::ExportDefault, "foo"),
                (SymbolKind::ExportDefault, "default"),
            ]
        );
    }
}
