//! Go: `import "x"`, `import alias "x"` and `import ( … )` blocks; top-level
//! `func` (methods as `Receiver.Name`), `type`, `var` and `const`, single
//! or in `( … )` blocks.

use super::scan::{self, ident, keyword, string_at, Line, Quote, Syntax};
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
            escapes: false,
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

#[derive(Clone, Copy, PartialEq)]
enum Block {
    Import,
    Decl(SymbolKind),
}

fn exported(name: &str) -> bool {
    name.starts_with(|c: char| c.is_uppercase())
}

/// `a, b, c` at the start of `s`.
fn names(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(n) = ident(rest) {
        out.push(n);
        rest = rest[n.len()..].trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None => break,
        }
    }
    out
}

/// One import spec (`"fmt"`, `f "fmt"`, `_ "x"`) starting at byte `at`.
fn import_spec(l: &Line, at: usize, line: usize, out: &mut Vec<Import>) {
    if let Some((m, _)) = string_at(&l.code, l.text, at) {
        out.push(Import {
            module: m,
            kind: ImportKind::Import,
            line,
        });
    }
}

fn decl(kind: SymbolKind, s: &str, line: usize, out: &mut Vec<Symbol>) {
    let found = if kind == SymbolKind::Type {
        ident(s).into_iter().collect()
    } else {
        names(s)
    };
    for n in found {
        if n != "_" {
            out.push(Symbol {
                kind,
                name: n.to_string(),
                line,
                exported: exported(n),
            });
        }
    }
}

/// The receiver's type name in `(r *T[K]) Name(`; returns (type, rest).
fn receiver(s: &str) -> Option<(&str, &str)> {
    let close = s.find(')')?;
    let inner = s[1..close].trim();
    let ty = inner.rsplit([' ', '*']).next()?.trim();
    let ty = ty.split('[').next()?;
    Some((ty, s[close + 1..].trim_start()))
}

pub fn extract(lines: &[Line]) -> Extracted {
    let braces = scan::depths(lines, b'{', b'}');
    let parens = scan::depths(lines, b'(', b')');
    let mut ex = Extracted::default();
    let mut block: Option<Block> = None;
    for (i, l) in lines.iter().enumerate() {
        let line_no = i + 1;
        let t = l.code.trim();
        let start = l.code.len() - l.code.trim_start().len();
        if let Some(b) = block {
            if parens[i] == 0 {
                block = None;
            } else {
                if parens[i] == 1 && braces[i] == 0 && !t.starts_with(')') {
                    match b {
                        Block::Import => import_spec(l, start, line_no, &mut ex.imports),
                        Block::Decl(kind) => decl(kind, t, line_no, &mut ex.symbols),
                    }
                }
                continue;
            }
        }
        if braces[i] != 0 || parens[i] != 0 {
            continue;
        }
        if let Some(r) = keyword(t, "import") {
            if let Some(inner) = r.strip_prefix('(') {
                // `import ( "a"; "b" )` may sit on one line.
                let at = start + (t.len() - inner.len());
                let mut from = at;
                while let Some((m, end)) = string_at(&l.code, l.text, from) {
                    ex.imports.push(Import {
                        module: m,
                        kind: ImportKind::Import,
                        line: line_no,
                    });
                    from = end;
                }
                block = Some(Block::Import);
            } else {
                import_spec(l, start, line_no, &mut ex.imports);
            }
        } else if let Some(r) = keyword(t, "func") {
            let (recv, r) = if r.starts_with('(') {
                match receiver(r) {
                    Some((ty, rest)) => (Some(ty), rest),
                    None => continue,
                }
            } else {
                (None, r)
            };
            if let Some(n) = ident(r) {
                ex.symbols.push(Symbol {
                    kind: if recv.is_some() {
                        SymbolKind::Method
                    } else {
                        SymbolKind::Function
                    },
                    name: match recv {
                        Some(ty) => format!("{ty}.{n}"),
                        None => n.to_string(),
                    },
                    line: line_no,
                    exported: exported(n),
                });
            }
        } else {
            for (kw, kind) in [
                ("type", SymbolKind::Type),
                ("var", SymbolKind::Var),
                ("const", SymbolKind::Const),
            ] {
                if let Some(r) = keyword(t, kw) {
                    if let Some(inner) = r.strip_prefix('(') {
                        block = Some(Block::Decl(kind));
                        let inner = inner.trim();
                        if !inner.is_empty() && !inner.starts_with(')') {
                            decl(kind, inner, line_no, &mut ex.symbols);
                        }
                    } else {
                        decl(kind, r, line_no, &mut ex.symbols);
                    }
                    break;
                }
            }
        }
    }
    ex
}

#[cfg(test)]
mod tests {
    use super::super::{analyze, ImportKind, Language, SymbolKind};

    const SRC: &str = r#"// Package demo shows things. import "fake"
package demo

import "fmt"
import str "strings"

import (
	"context"
	_ "embed"
	nethttp "net/http"
	// "commented/out"
	"github.com/org/repo/pkg"
)

const Version = "1.0"

const (
	A, B = 1, 2
	c    = `
func NotReal() {}
`
)

var (
	ErrX = fmt.Errorf("x")
	cfg  struct {
		Name string
	}
)

var global int

type Server struct {
	Addr string
}

type (
	Handler func(ctx context.Context) error
	id      int
)

func New(addr string) *Server {
	s := "func fake() {}"
	return &Server{Addr: addr}
}

func (s *Server) Start() error { return nil }
func (l list[T]) len() int { return 0 }
"#;

    #[test]
    fn imports_and_top_level_declarations() {
        let a = analyze(Language::Go, SRC);
        let imports: Vec<(&str, usize)> = a
            .imports
            .iter()
            .map(|i| {
                assert_eq!(i.kind, ImportKind::Import);
                (i.module.as_str(), i.line)
            })
            .collect();
        assert_eq!(
            imports,
            vec![
                ("fmt", 4),
                ("strings", 5),
                ("context", 8),
                ("embed", 9),
                ("net/http", 10),
                ("github.com/org/repo/pkg", 12),
            ]
        );
        assert_eq!(a.dependencies.len(), 6);
        let symbols: Vec<(SymbolKind, &str, bool)> = a
            .symbols
            .iter()
            .map(|s| (s.kind, s.name.as_str(), s.exported))
            .collect();
        assert_eq!(
            symbols,
            vec![
                (SymbolKind::Const, "Version", true),
                (SymbolKind::Const, "A", true),
                (SymbolKind::Const, "B", true),
                (SymbolKind::Const, "c", false),
                (SymbolKind::Var, "ErrX", true),
                (SymbolKind::Var, "cfg", false),
                (SymbolKind::Var, "global", false),
                (SymbolKind::Type, "Server", true),
                (SymbolKind::Type, "Handler", true),
                (SymbolKind::Type, "id", false),
                (SymbolKind::Function, "New", true),
                (SymbolKind::Method, "Server.Start", true),
                (SymbolKind::Method, "list.len", false),
            ]
        );
    }
}
