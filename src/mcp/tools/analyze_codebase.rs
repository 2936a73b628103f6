//! `analyze_codebase`: read files inside the workspace root, report per file
//! its language, line counts, imports and top-level symbols, and append a
//! summary of that analysis (never the files' contents) to the session as
//! one `file` entry.

use std::path::Path;

use handoff_actors::model::{ContextType, NewEntry};
use handoff_actors::{ErrorCode, HandoffError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analysis::workspace::{Resolved, Unread, Workspace};
use crate::analysis::{self, AnalysisType, Import, Language, LineStats, Symbol};
use crate::mcp::args::{self, ToolArgs};
use crate::mcp::context::Ctx;
use crate::mcp::tools::update_context::EntryAck;
use crate::mcp::types::SessionBrief;

pub const NAME: &str = "analyze_codebase";
pub const DESCRIPTION: &str = "Analyze source files inside the server's workspace root (HANDOFF_WORKSPACE_ROOT) \
and record the result in the session as one `file` entry. Per file: language (by extension: Rust, TypeScript, \
JavaScript, Python, Go; others \"unknown\" with line counts only), line counts, imports and external \
dependencies, and top-level symbols. analysis_type: syntax (language and lines), dependencies (+ imports), \
structure (+ symbols) or full (default). file_paths: 1–50 paths relative to the workspace root; a path that \
escapes it (.., absolute, symlink) is FORBIDDEN. A missing file, or one over the content limit, is reported in \
its result and the others are still analyzed.";

/// Paths in one call at most.
pub const MAX_FILES: usize = 50;
/// The longest one call may spend reading and scanning its files.
const ANALYSIS_TIME: std::time::Duration = std::time::Duration::from_secs(30);
/// One path's length at most, in bytes.
const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub session_key: String,
    /// 1–50 file paths, relative to the workspace root (absolute paths must
    /// lie inside it).
    pub file_paths: Vec<String>,
    /// syntax | dependencies | structure | full (default).
    pub analysis_type: Option<AnalysisType>,
}

impl ToolArgs for Args {}

/// `analyzed`; `skipped` (over the content limit, or binary: see
/// `reason`); `error` (not found, not a regular file, unreadable: see
/// `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Analyzed,
    Skipped,
    Error,
}

/// One file's result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileResult {
    /// The path as given.
    pub path: String,
    /// Where it led, relative to the workspace root (symlinks resolved);
    /// absent when nothing is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_path: Option<String>,
    pub status: FileStatus,
    /// Why the file was skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub language: Language,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<LineStats>,
    /// dependencies / full analyses of a known language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imports: Option<Vec<Import>>,
    /// External packages the imports name (dependencies / full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<String>>,
    /// Top-level symbols (structure / full analyses of a known language).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<Symbol>>,
    /// More than 1,000 imports or symbols were found; the lists stop there.
    pub truncated: bool,
}

#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Totals {
    pub files: usize,
    pub analyzed: usize,
    pub skipped: usize,
    pub errors: usize,
    /// Lines in the analysed files.
    pub lines: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub message: String,
    pub analysis_type: AnalysisType,
    /// One result per requested path, in order.
    pub files: Vec<FileResult>,
    pub totals: Totals,
    /// The stored `file` entry holding the analysis summary.
    pub context_entry: EntryAck,
    pub session: SessionBrief,
}

fn check_paths(paths: &[String]) -> Result<(), HandoffError> {
    if paths.is_empty() || paths.len() > MAX_FILES {
        return Err(HandoffError::validation(format!(
            "file_paths must hold 1–{MAX_FILES} paths (got {})",
            paths.len()
        ))
        .detail("field", "file_paths"));
    }
    for (i, p) in paths.iter().enumerate() {
        let field = format!("file_paths[{i}]");
        if p.is_empty() || p.len() > MAX_PATH_BYTES {
            return Err(HandoffError::validation(format!(
                "{field} must be 1–{MAX_PATH_BYTES} bytes (got {})",
                p.len()
            ))
            .detail("field", field));
        }
        if p.chars().any(char::is_control) {
            return Err(HandoffError::validation(format!(
                "{field} must not contain control characters"
            ))
            .detail("field", field));
        }
    }
    Ok(())
}

fn result(path: &str, language: Language) -> FileResult {
    FileResult {
        path: path.to_string(),
        resolved_path: None,
        status: FileStatus::Error,
        reason: None,
        language,
        size_bytes: None,
        lines: None,
        imports: None,
        dependencies: None,
        symbols: None,
        truncated: false,
    }
}

/// Confine every path first (any escape fails the call before a byte is
/// read), then read and analyse the files one at a time.
fn analyze_all(
    root: &Path,
    paths: &[String],
    kind: AnalysisType,
    limit: usize,
) -> Result<Vec<FileResult>, HandoffError> {
    let ws = Workspace::open(root)?;
    let resolved = paths
        .iter()
        .enumerate()
        .map(|(i, p)| ws.resolve(&format!("file_paths[{i}]"), p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(paths.len());
    for (i, (given, r)) in paths.iter().zip(resolved).enumerate() {
        let mut res = result(given, Language::from_path(Path::new(given)));
        let real = match r {
            Resolved::Found(real) => real,
            Resolved::Missing => {
                res.reason = Some("not found".into());
                out.push(res);
                continue;
            }
            Resolved::Unreadable(why) => {
                res.reason = Some(format!("cannot be read: {why}"));
                out.push(res);
                continue;
            }
        };
        res.resolved_path = Some(ws.relative(&real));
        // The language follows the file read (a symlink's target).
        res.language = Language::from_path(&real);
        let bytes = match ws.read(&format!("file_paths[{i}]"), given, &real, limit)? {
            Ok(b) => b,
            Err(Unread::TooLarge { size, limit }) => {
                res.status = FileStatus::Skipped;
                res.size_bytes = Some(size);
                res.reason = Some(format!(
                    "file is {size} bytes; the content limit is {limit} bytes (max_content_bytes)"
                ));
                out.push(res);
                continue;
            }
            Err(Unread::NotAFile) => {
                res.reason = Some("not a regular file".into());
                out.push(res);
                continue;
            }
            Err(Unread::HardLinked) => {
                res.status = FileStatus::Skipped;
                res.reason = Some(
                    "the file has more than one hard link (another name may lie outside the \
                     workspace root); not read"
                        .into(),
                );
                out.push(res);
                continue;
            }
            Err(Unread::Io(why)) => {
                res.reason = Some(format!("cannot be read: {why}"));
                out.push(res);
                continue;
            }
        };
        res.size_bytes = Some(bytes.len() as u64);
        if bytes.contains(&0) {
            res.status = FileStatus::Skipped;
            res.reason = Some("binary file (contains NUL bytes)".into());
            out.push(res);
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        if res.language == Language::Unknown {
            res.language = Language::from_shebang(&text);
        }
        let a = analysis::analyze(res.language, &text);
        res.status = FileStatus::Analyzed;
        res.lines = Some(a.lines);
        let known = a.language != Language::Unknown;
        if known && kind.imports() {
            res.imports = Some(a.imports);
            res.dependencies = Some(a.dependencies);
        }
        if known && kind.symbols() {
            res.symbols = Some(a.symbols);
        }
        res.truncated = a.truncated;
        out.push(res);
    }
    Ok(out)
}

fn totals(files: &[FileResult]) -> Totals {
    let mut t = Totals {
        files: files.len(),
        ..Totals::default()
    };
    for f in files {
        match f.status {
            FileStatus::Analyzed => t.analyzed += 1,
            FileStatus::Skipped => t.skipped += 1,
            FileStatus::Error => t.errors += 1,
        }
        t.lines += f.lines.as_ref().map_or(0, |l| l.total);
    }
    t
}

/// A list with at most `cap` items shown.
fn listing<T>(items: &[T], cap: usize, show: impl Fn(&T) -> String) -> String {
    let mut s = items
        .iter()
        .take(cap)
        .map(show)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > cap {
        if !s.is_empty() {
            s.push_str(", ");
        }
        s.push_str(&format!("… and {} more", items.len() - cap));
    }
    s
}

/// The readable summary stored as the entry's content, each list showing at
/// most `cap` items.
fn render(kind: AnalysisType, files: &[FileResult], t: &Totals, cap: usize) -> String {
    let mut s = format!(
        "Codebase analysis ({}) of {} file{}: {} analyzed, {} skipped, {} error{}; {} lines\n",
        kind.as_str(),
        t.files,
        if t.files == 1 { "" } else { "s" },
        t.analyzed,
        t.skipped,
        t.errors,
        if t.errors == 1 { "" } else { "s" },
        t.lines
    );
    for f in files {
        s.push_str(&format!("\n## {}", f.path));
        if let Some(r) = f.resolved_path.as_ref().filter(|r| **r != f.path) {
            s.push_str(&format!(" (→ {r})"));
        }
        s.push_str(&format!(" [{}]", f.language.as_str()));
        match f.status {
            FileStatus::Analyzed => {}
            FileStatus::Skipped | FileStatus::Error => {
                let label = if f.status == FileStatus::Skipped {
                    "skipped"
                } else {
                    "error"
                };
                s.push_str(&format!(
                    " {label}: {}\n",
                    f.reason.as_deref().unwrap_or("unknown")
                ));
                continue;
            }
        }
        if let Some(l) = &f.lines {
            s.push_str(&format!(
                " {} lines ({} code, {} comment, {} blank)\n",
                l.total, l.code, l.comment, l.blank
            ));
        }
        if let Some(imports) = &f.imports {
            s.push_str(&format!(
                "imports ({}): {}\n",
                imports.len(),
                listing(imports, cap, |i| format!("{} (L{})", i.module, i.line))
            ));
        }
        if let Some(deps) = &f.dependencies {
            s.push_str(&format!(
                "dependencies ({}): {}\n",
                deps.len(),
                listing(deps, cap, String::clone)
            ));
        }
        if let Some(symbols) = &f.symbols {
            s.push_str(&format!(
                "symbols ({}): {}\n",
                symbols.len(),
                listing(symbols, cap, |y| format!(
                    "{} {}{} (L{})",
                    y.kind.as_str(),
                    y.name,
                    if y.exported { " [exported]" } else { "" },
                    y.line
                ))
            ));
        }
        if f.truncated {
            s.push_str("(lists truncated at 1000 items)\n");
        }
    }
    s
}

/// The summary, shortened until it fits in `limit` bytes: lists are cut to
/// fewer items first; as a last resort the text itself is cut.
fn summary(kind: AnalysisType, files: &[FileResult], t: &Totals, limit: usize) -> String {
    for cap in [usize::MAX, 200, 50, 10, 0] {
        let s = render(kind, files, t, cap);
        if s.len() <= limit {
            return s;
        }
    }
    const CUT: &str = "\n… (summary truncated to the content limit)";
    let mut s = render(kind, files, t, 0);
    // Keep the marker when there is room for it and some text; the text
    // starts with ASCII, so at least one byte always remains (the content
    // limit is at least 1).
    let room = if limit > CUT.len() {
        limit - CUT.len()
    } else {
        limit
    };
    let mut end = room.max(1);
    while end > 1 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    if s.len() + CUT.len() <= limit {
        s.push_str(CUT);
    }
    s
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    args::session_key(&ctx.cfg, &a.session_key)?;
    check_paths(&a.file_paths)?;
    let Some(root) = ctx.cfg.workspace_root.clone() else {
        return Err(HandoffError::new(
            ErrorCode::Forbidden,
            "analyze_codebase is disabled: no workspace root is configured; start the server with \
             HANDOFF_WORKSPACE_ROOT (or workspace_root in the configuration file) set to the directory \
             it may read",
        )
        .detail("setting", "HANDOFF_WORKSPACE_ROOT"));
    };
    let kind = a.analysis_type.unwrap_or_default();
    let limit = ctx.cfg.max_content_bytes;
    let paths = a.file_paths;
    // File I/O and scanning block: off the async workers, and bounded in
    // time (a file on a stuck network mount must not hold the call).
    let work = tokio::task::spawn_blocking(move || analyze_all(&root, &paths, kind, limit));
    let files = tokio::time::timeout(ANALYSIS_TIME, work)
        .await
        .map_err(|_| {
            HandoffError::internal(format!(
                "reading the files took longer than {} s; nothing was stored",
                ANALYSIS_TIME.as_secs()
            ))
        })?
        .map_err(|e| {
            HandoffError::internal("the analysis task failed").internal_cause(e.to_string())
        })??;
    let t = totals(&files);
    let content = summary(kind, &files, &t, limit);
    let entry = NewEntry {
        context_type: ContextType::File,
        content,
        metadata: Some(json!({
            "source": NAME,
            "analysis_type": kind.as_str(),
            "files": t.files,
            "analyzed": t.analyzed,
            "skipped": t.skipped,
            "errors": t.errors,
        })),
    };
    let r = ctx
        .core
        .append(&ctx.key(&a.session_key), vec![entry])
        .await?;
    let e = r
        .entries
        .first()
        .ok_or_else(|| HandoffError::internal("the append returned no entry"))?;
    let context_entry = EntryAck {
        id: e.id.to_string(),
        sequence_number: e.sequence_number,
        context_type: e.context_type.as_str().into(),
        content_length: e.content_length,
        created_at: handoff_actors::model::rfc3339(&e.created_at),
    };
    Ok(Out {
        success: true,
        message: format!(
            "analyzed {} of {} file{}; summary stored as entry {}",
            t.analyzed,
            t.files,
            if t.files == 1 { "" } else { "s" },
            context_entry.sequence_number
        ),
        analysis_type: kind,
        files,
        totals: t,
        context_entry,
        session: SessionBrief {
            id: r.session_id.to_string(),
            session_key: a.session_key,
            status: r.status.as_str().into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyzed(path: &str, n: usize) -> FileResult {
        let mut f = result(path, Language::Rust);
        f.status = FileStatus::Analyzed;
        f.lines = Some(LineStats {
            total: n,
            code: n,
            comment: 0,
            blank: 0,
        });
        f.symbols = Some(
            (0..n)
                .map(|i| Symbol {
                    kind: analysis::SymbolKind::Function,
                    name: format!("function_number_{i}"),
                    line: i + 1,
                    exported: false,
                })
                .collect(),
        );
        f
    }

    #[test]
    fn paths_are_validated() {
        assert!(check_paths(&[]).is_err());
        assert!(check_paths(&vec!["a".to_string(); MAX_FILES]).is_ok());
        assert!(check_paths(&vec!["a".to_string(); MAX_FILES + 1]).is_err());
        let e = check_paths(&["ok".into(), "".into()]).unwrap_err();
        assert_eq!(e.details["field"], "file_paths[1]");
        assert!(check_paths(&["a\u{0}b".into()]).is_err());
    }

    #[test]
    fn summary_fits_the_content_limit() {
        let files = vec![analyzed("a.rs", 500), analyzed("b.rs", 3)];
        let t = totals(&files);
        let full = summary(AnalysisType::Full, &files, &t, 1 << 20);
        assert!(full.contains("function_number_499 (L500)"));
        for limit in [20_000, 2_000, 300, 60, 1] {
            let s = summary(AnalysisType::Full, &files, &t, limit);
            assert!(s.len() <= limit, "{} > {limit}", s.len());
            assert!(!s.is_empty());
            if limit >= 300 {
                assert!(s.starts_with("Codebase analysis (full) of 2 files"), "{s}");
            }
        }
        let s = summary(AnalysisType::Full, &files, &t, 2_000);
        assert!(s.contains("… and"), "{s}");
    }
}
