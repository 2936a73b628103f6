//! Source analysis for `analyze_codebase`: language by extension, line
//! counts, imports and top-level symbols. A careful line-based scanner per
//! language (no parser): comments and string contents are masked first
//! (`scan`), so keywords inside them are never mistaken for code.

mod go;
mod javascript;
mod python;
mod rust;
pub mod scan;
pub mod workspace;

use std::collections::BTreeSet;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many imports and this many symbols are reported per file
/// (`truncated` says when more were found).
pub const MAX_ITEMS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Rust,
    Typescript,
    Javascript,
    Python,
    Go,
    Unknown,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Typescript => "typescript",
            Language::Javascript => "javascript",
            Language::Python => "python",
            Language::Go => "go",
            Language::Unknown => "unknown",
        }
    }

    /// By file extension.
    pub fn from_path(path: &Path) -> Language {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("rs") => Language::Rust,
            Some("ts" | "tsx" | "mts" | "cts") => Language::Typescript,
            Some("js" | "jsx" | "mjs" | "cjs") => Language::Javascript,
            Some("py" | "pyi") => Language::Python,
            Some("go") => Language::Go,
            _ => Language::Unknown,
        }
    }

    /// For a file without a known extension: its `#!` line, if any.
    pub fn from_shebang(text: &str) -> Language {
        let Some(first) = text.lines().next() else {
            return Language::Unknown;
        };
        let Some(cmd) = first.strip_prefix("#!") else {
            return Language::Unknown;
        };
        let mut words = cmd.split_whitespace();
        let mut prog = words.next().unwrap_or("");
        if prog.ends_with("/env") {
            prog = words.find(|w| !w.starts_with('-')).unwrap_or("");
        }
        let name = prog.rsplit('/').next().unwrap_or("");
        if name.starts_with("python") {
            Language::Python
        } else if name == "node" || name == "deno" || name == "bun" {
            Language::Javascript
        } else {
            Language::Unknown
        }
    }
}

/// What an analysis reports (`analysis_type`): `syntax` (language and line
/// counts), `dependencies` (+ imports and dependencies), `structure`
/// (+ top-level symbols) or `full` (everything; the default).
// Variants carry no doc comments, so the schema is a plain `enum`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisType {
    Syntax,
    Dependencies,
    Structure,
    #[default]
    Full,
}

impl AnalysisType {
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisType::Syntax => "syntax",
            AnalysisType::Dependencies => "dependencies",
            AnalysisType::Structure => "structure",
            AnalysisType::Full => "full",
        }
    }
    pub fn imports(self) -> bool {
        matches!(self, AnalysisType::Dependencies | AnalysisType::Full)
    }
    pub fn symbols(self) -> bool {
        matches!(self, AnalysisType::Structure | AnalysisType::Full)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LineStats {
    pub total: usize,
    /// Lines holding code (string contents count as code).
    pub code: usize,
    /// Lines holding only comments (0 for an unknown language).
    pub comment: usize,
    pub blank: usize,
}

/// How a module is brought in: `use` / `extern_crate` / `mod` (Rust `use`,
/// `extern crate`, `mod name;`), `import` (JS/TS, Python, Go), `from`
/// (Python `from x import y`), `require` / `dynamic_import` (JS
/// `require('…')`, `import('…')`), `re_export` (JS/TS `export … from '…'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    Use,
    ExternCrate,
    Mod,
    Import,
    From,
    Require,
    DynamicImport,
    ReExport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Import {
    /// The module as written (`std::collections::HashMap`, `./util`,
    /// `os.path`, `net/http`).
    pub module: String,
    pub kind: ImportKind,
    /// 1-based line of the statement.
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SymbolKind {
    Function,
    Method,
    Struct,
    Enum,
    Union,
    Trait,
    Impl,
    Module,
    Const,
    Static,
    Type,
    Macro,
    Class,
    Interface,
    Namespace,
    Let,
    Var,
    ExportDefault,
}

impl SymbolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SymbolKind::Function => "function",
            SymbolKind::Method => "method",
            SymbolKind::Struct => "struct",
            SymbolKind::Enum => "enum",
            SymbolKind::Union => "union",
            SymbolKind::Trait => "trait",
            SymbolKind::Impl => "impl",
            SymbolKind::Module => "module",
            SymbolKind::Const => "const",
            SymbolKind::Static => "static",
            SymbolKind::Type => "type",
            SymbolKind::Macro => "macro",
            SymbolKind::Class => "class",
            SymbolKind::Interface => "interface",
            SymbolKind::Namespace => "namespace",
            SymbolKind::Let => "let",
            SymbolKind::Var => "var",
            SymbolKind::ExportDefault => "export_default",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Symbol {
    pub kind: SymbolKind,
    /// The name; for an `impl`, its header (`Display for Foo`); for a Go
    /// method, `Receiver.Name`.
    pub name: String,
    /// 1-based line.
    pub line: usize,
    /// Visible outside its module: Rust `pub`, JS/TS `export`, Go
    /// capitalised, Python without a leading underscore.
    pub exported: bool,
}

/// What a language scanner finds.
#[derive(Debug, Default)]
pub struct Extracted {
    pub imports: Vec<Import>,
    pub symbols: Vec<Symbol>,
}

/// The analysis of one file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub language: Language,
    pub lines: LineStats,
    pub imports: Vec<Import>,
    /// External packages/crates/modules the imports name, sorted, unique.
    pub dependencies: Vec<String>,
    pub symbols: Vec<Symbol>,
    pub truncated: bool,
}

/// Analyse `text` as `language`.
pub fn analyze(language: Language, text: &str) -> Analysis {
    let syntax = match language {
        Language::Rust => Some(&rust::SYNTAX),
        Language::Typescript | Language::Javascript => Some(&javascript::SYNTAX),
        Language::Python => Some(&python::SYNTAX),
        Language::Go => Some(&go::SYNTAX),
        Language::Unknown => None,
    };
    let Some(syntax) = syntax else {
        let total = text.lines().count();
        let blank = text.lines().filter(|l| l.trim().is_empty()).count();
        return Analysis {
            language,
            lines: LineStats {
                total,
                code: total - blank,
                comment: 0,
                blank,
            },
            imports: Vec::new(),
            dependencies: Vec::new(),
            symbols: Vec::new(),
            truncated: false,
        };
    };
    let lines = scan::scan(text, syntax);
    let mut stats = LineStats {
        total: lines.len(),
        ..LineStats::default()
    };
    for l in &lines {
        if l.is_blank() {
            stats.blank += 1;
        } else if !l.has_code && l.has_comment {
            stats.comment += 1;
        } else {
            stats.code += 1;
        }
    }
    let mut ex = match language {
        Language::Rust => rust::extract(&lines),
        Language::Typescript | Language::Javascript => javascript::extract(&lines),
        Language::Python => python::extract(&lines),
        Language::Go => go::extract(&lines),
        Language::Unknown => Extracted::default(),
    };
    // One statement may be seen twice (`import x = require('y')`).
    let mut seen = BTreeSet::new();
    ex.imports
        .retain(|i| seen.insert((i.line, i.module.clone())));
    ex.imports.sort_by_key(|i| i.line);
    ex.symbols.sort_by_key(|s| s.line);
    let dependencies: Vec<String> = ex
        .imports
        .iter()
        .filter_map(|i| dependency(language, i))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let truncated = ex.imports.len() > MAX_ITEMS || ex.symbols.len() > MAX_ITEMS;
    ex.imports.truncate(MAX_ITEMS);
    ex.symbols.truncate(MAX_ITEMS);
    Analysis {
        language,
        lines: stats,
        imports: ex.imports,
        dependencies,
        symbols: ex.symbols,
        truncated,
    }
}

/// The external package an import names, if it is not local to the
/// project: the crate of a Rust path, the npm package of a JS specifier,
/// the top-level Python package, the Go import path.
fn dependency(language: Language, i: &Import) -> Option<String> {
    let m = i.module.as_str();
    match language {
        Language::Rust => {
            if i.kind == ImportKind::Mod {
                return None;
            }
            let first = m.trim_start_matches("::").split("::").next()?.trim();
            let first = first.split([' ', '{']).next()?;
            if first.is_empty() || matches!(first, "crate" | "self" | "super" | "Self") {
                None
            } else {
                Some(first.to_string())
            }
        }
        Language::Typescript | Language::Javascript => {
            if m.is_empty() || m.starts_with('.') || m.starts_with('/') {
                return None;
            }
            let mut parts = m.split('/');
            let first = parts.next()?;
            if first.starts_with('@') {
                let second = parts.next()?;
                Some(format!("{first}/{second}"))
            } else {
                Some(first.to_string())
            }
        }
        Language::Python => {
            if m.starts_with('.') {
                return None;
            }
            Some(m.split('.').next()?.to_string())
        }
        Language::Go => Some(m.to_string()),
        Language::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_by_extension_and_shebang() {
        assert_eq!(Language::from_path(Path::new("a/b.rs")), Language::Rust);
        assert_eq!(
            Language::from_path(Path::new("x.TSX")),
            Language::Typescript
        );
        assert_eq!(
            Language::from_path(Path::new("x.mjs")),
            Language::Javascript
        );
        assert_eq!(Language::from_path(Path::new("x.pyi")), Language::Python);
        assert_eq!(Language::from_path(Path::new("main.go")), Language::Go);
        assert_eq!(Language::from_path(Path::new("README")), Language::Unknown);
        assert_eq!(
            Language::from_shebang("#!/usr/bin/env python3\nprint(1)\n"),
            Language::Python
        );
        assert_eq!(
            Language::from_shebang("#!/usr/bin/node\n"),
            Language::Javascript
        );
        assert_eq!(Language::from_shebang("#!/bin/sh\n"), Language::Unknown);
    }

    #[test]
    fn unknown_language_counts_lines_only() {
        let a = analyze(Language::Unknown, "one\n\nthree\n");
        assert_eq!(
            a.lines,
            LineStats {
                total: 3,
                code: 2,
                comment: 0,
                blank: 1
            }
        );
        assert!(a.imports.is_empty() && a.symbols.is_empty());
    }

    #[test]
    fn line_stats_split_code_comment_blank() {
        let a = analyze(
            Language::Rust,
            "// c\n\nfn main() {} // trailing\n/* a\n b */\n",
        );
        assert_eq!(
            a.lines,
            LineStats {
                total: 5,
                code: 1,
                comment: 3,
                blank: 1
            }
        );
    }

    #[test]
    fn dependencies_are_external_roots() {
        let imp = |module: &str, kind| Import {
            module: module.into(),
            kind,
            line: 1,
        };
        assert_eq!(
            dependency(Language::Rust, &imp("serde::Serialize", ImportKind::Use)),
            Some("serde".into())
        );
        assert_eq!(
            dependency(Language::Rust, &imp("crate::x", ImportKind::Use)),
            None
        );
        assert_eq!(
            dependency(Language::Rust, &imp("::std::fmt", ImportKind::Use)),
            Some("std".into())
        );
        assert_eq!(
            dependency(
                Language::Typescript,
                &imp("@scope/pkg/deep", ImportKind::Import)
            ),
            Some("@scope/pkg".into())
        );
        assert_eq!(
            dependency(Language::Javascript, &imp("./util", ImportKind::Import)),
            None
        );
        assert_eq!(
            dependency(Language::Python, &imp("os.path", ImportKind::Import)),
            Some("os".into())
        );
        assert_eq!(
            dependency(Language::Python, &imp(".sibling", ImportKind::From)),
            None
        );
    }
}
