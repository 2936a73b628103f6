//! Python: `import a, b.c as d` and `from x import y` (at any indentation:
//! imports inside `try:` or functions are dependencies too), and `def` /
//! `class` at column 0.

use super::scan::{self, ident, keyword, Line, Quote, Syntax};
use super::{Extracted, Import, ImportKind, Symbol, SymbolKind};

pub static SYNTAX: Syntax = Syntax {
    line_comments: &["#"],
    block_comment: None,
    nested_block_comments: false,
    quotes: &[
        Quote {
            open: "\"\"\"",
            close: "\"\"\"",
            multiline: true,
            escapes: true,
        },
        Quote {
            open: "'''",
            close: "'''",
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
    js_regex: false,
};

/// A dotted module name (`os.path`, `..pkg.mod`, `.`).
fn module_name(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(scan::ident_char(c) || c == '.'))
        .unwrap_or(s.len());
    let m = &s[..end];
    (!m.is_empty() && !m.contains('$')).then_some(m)
}

fn statement_imports(stmt: &str, line: usize, out: &mut Vec<Import>) {
    let stmt = stmt.trim();
    if let Some(r) = keyword(stmt, "import") {
        for part in r.split(',') {
            if let Some(m) = module_name(part.trim().trim_start_matches('(').trim_start()) {
                out.push(Import {
                    module: m.to_string(),
                    kind: ImportKind::Import,
                    line,
                });
            }
        }
    } else if let Some(r) = keyword(stmt, "from") {
        if let Some(m) = module_name(r) {
            if keyword(r[m.len()..].trim_start(), "import").is_some() {
                out.push(Import {
                    module: m.to_string(),
                    kind: ImportKind::From,
                    line,
                });
            }
        }
    }
}

pub fn extract(lines: &[Line]) -> Extracted {
    let parens = scan::depths(lines, b'(', b')');
    let brackets = scan::depths(lines, b'[', b']');
    let braces = scan::depths(lines, b'{', b'}');
    let mut ex = Extracted::default();
    let mut continued = false;
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let code = lines[i].code.trim_end();
        let starts_statement = !continued && parens[i] == 0 && brackets[i] == 0 && braces[i] == 0;
        continued = code.ends_with('\\');
        if !starts_statement {
            i += 1;
            continue;
        }
        // Join backslash continuations into one logical line.
        let mut logical = code.trim_end_matches('\\').to_string();
        let mut j = i;
        while lines[j].code.trim_end().ends_with('\\') && j + 1 < lines.len() {
            j += 1;
            logical.push(' ');
            logical.push_str(lines[j].code.trim_end().trim_end_matches('\\'));
        }
        for stmt in logical.split(';') {
            statement_imports(stmt, line_no, &mut ex.imports);
        }
        let column0 = !code.starts_with([' ', '\t']);
        if column0 {
            let t = code.trim_start();
            let t = keyword(t, "async").unwrap_or(t);
            let found = keyword(t, "def")
                .map(|r| (SymbolKind::Function, r))
                .or_else(|| keyword(t, "class").map(|r| (SymbolKind::Class, r)));
            if let Some((kind, r)) = found {
                if let Some(n) = ident(r) {
                    ex.symbols.push(Symbol {
                        kind,
                        name: n.to_string(),
                        line: line_no,
                        exported: !n.starts_with('_'),
                    });
                }
            }
        }
        continued = false;
        i = j + 1;
    }
    ex
}

#[cfg(test)]
mod tests {
    use super::super::{analyze, ImportKind, Language, SymbolKind};

    const SRC: &str = r#"#!/usr/bin/env python3
"""Module docstring.

def not_a_function():
import not_an_import
"""
import os, sys as system
import os.path
from collections import (
    OrderedDict,
    defaultdict,
)
from . import sibling
from ..pkg.mod import thing  # import fake
import json; import re
x = "import nope"

try:
    import ujson as json
except ImportError:
    pass


@decorator
def public(a,
           b):
    def inner():
        pass
    return '''
def in_string():
'''


async def fetch():
    pass


class _Private(Base):
    def method(self):
        import inside_method
"#;

    #[test]
    fn imports_and_column0_definitions() {
        let a = analyze(Language::Python, SRC);
        let imports: Vec<(&str, ImportKind, usize)> = a
            .imports
            .iter()
            .map(|i| (i.module.as_str(), i.kind, i.line))
            .collect();
        assert_eq!(
            imports,
            vec![
                ("os", ImportKind::Import, 7),
                ("sys", ImportKind::Import, 7),
                ("os.path", ImportKind::Import, 8),
                ("collections", ImportKind::From, 9),
                (".", ImportKind::From, 13),
                ("..pkg.mod", ImportKind::From, 14),
                ("json", ImportKind::Import, 15),
                ("re", ImportKind::Import, 15),
                ("ujson", ImportKind::Import, 19),
                ("inside_method", ImportKind::Import, 40),
            ]
        );
        assert_eq!(
            a.dependencies,
            vec![
                "collections",
                "inside_method",
                "json",
                "os",
                "re",
                "sys",
                "ujson"
            ]
        );
        let symbols: Vec<(SymbolKind, &str, bool, usize)> = a
            .symbols
            .iter()
            .map(|s| (s.kind, s.name.as_str(), s.exported, s.line))
            .collect();
        assert_eq!(
            symbols,
            vec![
                (SymbolKind::Function, "public", true, 25),
                (SymbolKind::Function, "fetch", true, 34),
                (SymbolKind::Class, "_Private", false, 38),
            ]
        );
        assert_eq!(a.lines.total, 40);
    }
}
