//! A small lexer shared by the language scanners: it blanks out comments and
//! the contents of string literals (keeping the quotes), byte for byte, so
//! the scanners can match keywords and count brackets on the masked text and
//! still cut a string's value (an import's module) out of the original line
//! at the same offsets.

/// A string literal form.
pub struct Quote {
    pub open: &'static str,
    pub close: &'static str,
    /// May span lines (Python `"""`, JS template literals, Go raw strings).
    pub multiline: bool,
    /// A backslash escapes the next character.
    pub escapes: bool,
}

/// The lexical rules the masker needs to know about a language.
pub struct Syntax {
    pub line_comments: &'static [&'static str],
    pub block_comment: Option<(&'static str, &'static str)>,
    pub nested_block_comments: bool,
    /// Tried in order, so longer openers (`"""`) come before shorter ones.
    pub quotes: &'static [Quote],
    /// Rust raw strings (`r#"…"#`, `br"…"`) and char literals vs lifetimes.
    pub rust_literals: bool,
    /// JavaScript regular-expression literals (`/…/flags`).
    pub js_regex: bool,
}

/// One source line after masking.
#[derive(Debug)]
pub struct Line<'a> {
    /// The original text, without its line terminator.
    pub text: &'a str,
    /// The same bytes with comments and string contents replaced by spaces.
    pub code: String,
    /// Holds code or string content (not only comments and whitespace).
    pub has_code: bool,
    pub has_comment: bool,
}

impl Line<'_> {
    pub fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }
}

enum State {
    Code,
    Block(usize),
    Str(&'static Quote),
    RawStr(usize),
    Regex { in_class: bool },
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Mask `src` under `syn` and split it into lines.
pub fn scan<'a>(src: &'a str, syn: &Syntax) -> Vec<Line<'a>> {
    let b = src.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    // Per line: (has_code, has_comment).
    let mut flags: Vec<(bool, bool)> = vec![(false, false)];
    let mut state = State::Code;
    let mut i = 0;
    // The last significant code byte, for telling a regex from a division.
    let mut last_sig: Option<u8> = None;
    let mut last_word_end = 0usize;

    macro_rules! mark {
        (code) => {
            flags.last_mut().expect("one line at least").0 = true
        };
        (comment) => {
            flags.last_mut().expect("one line at least").1 = true
        };
    }
    fn mask(out: &mut Vec<u8>, b: u8) {
        // Keep line structure; every other byte of a masked region becomes a
        // space (all bytes of a multi-byte character are masked together).
        out.push(if b == b'\n' { b'\n' } else { b' ' });
    }

    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            out.push(b'\n');
            flags.push((false, false));
            i += 1;
            match state {
                State::Str(q) if !q.multiline => state = State::Code,
                State::Regex { .. } => state = State::Code,
                _ => {}
            }
            continue;
        }
        match state {
            State::Code => {
                let rest = &b[i..];
                if let Some(lc) = syn
                    .line_comments
                    .iter()
                    .find(|lc| rest.starts_with(lc.as_bytes()))
                {
                    let _ = lc;
                    mark!(comment);
                    while i < b.len() && b[i] != b'\n' {
                        mask(&mut out, b[i]);
                        i += 1;
                    }
                    continue;
                }
                if let Some((open, _)) = syn.block_comment {
                    if rest.starts_with(open.as_bytes()) {
                        mark!(comment);
                        for _ in 0..open.len() {
                            mask(&mut out, b[i]);
                            i += 1;
                        }
                        state = State::Block(1);
                        continue;
                    }
                }
                if syn.rust_literals {
                    if let Some(n) = rust_raw_open(b, i) {
                        // Prefix, hashes and the opening quote stay visible.
                        let hashes = b[i..i + n].iter().filter(|&&x| x == b'#').count();
                        out.extend_from_slice(&b[i..i + n]);
                        mark!(code);
                        i += n;
                        state = State::RawStr(hashes);
                        last_sig = Some(b'"');
                        continue;
                    }
                    if c == b'\'' {
                        if let Some(n) = rust_char_len(b, i) {
                            out.push(b'\'');
                            for k in 1..n - 1 {
                                mask(&mut out, b[i + k]);
                            }
                            out.push(b'\'');
                            mark!(code);
                            i += n;
                            last_sig = Some(b'\'');
                            continue;
                        }
                        // A lifetime or label: plain code.
                    }
                }
                if let Some(q) = syn
                    .quotes
                    .iter()
                    .find(|q| rest.starts_with(q.open.as_bytes()))
                {
                    out.extend_from_slice(q.open.as_bytes());
                    mark!(code);
                    i += q.open.len();
                    state = State::Str(q);
                    last_sig = Some(b'"');
                    continue;
                }
                if syn.js_regex && c == b'/' && regex_may_start(&out, last_sig, last_word_end) {
                    out.push(b'/');
                    mark!(code);
                    i += 1;
                    state = State::Regex { in_class: false };
                    continue;
                }
                out.push(c);
                if !c.is_ascii_whitespace() {
                    mark!(code);
                    last_sig = Some(c);
                    if is_ident(c) {
                        last_word_end = out.len();
                    }
                }
                i += 1;
            }
            State::Block(depth) => {
                let (open, close) = syn.block_comment.expect("in a block comment");
                let rest = &b[i..];
                if !c.is_ascii_whitespace() {
                    mark!(comment);
                }
                if rest.starts_with(close.as_bytes()) {
                    for _ in 0..close.len() {
                        mask(&mut out, b[i]);
                        i += 1;
                    }
                    state = if depth == 1 {
                        State::Code
                    } else {
                        State::Block(depth - 1)
                    };
                } else if syn.nested_block_comments && rest.starts_with(open.as_bytes()) {
                    for _ in 0..open.len() {
                        mask(&mut out, b[i]);
                        i += 1;
                    }
                    state = State::Block(depth + 1);
                } else {
                    mask(&mut out, c);
                    i += 1;
                }
            }
            State::Str(q) => {
                if !c.is_ascii_whitespace() {
                    mark!(code);
                }
                if q.escapes && c == b'\\' {
                    mask(&mut out, c);
                    i += 1;
                    if i < b.len() && b[i] != b'\n' {
                        mask(&mut out, b[i]);
                        i += 1;
                    } else if i < b.len() {
                        // A line continuation inside the string.
                        out.push(b'\n');
                        flags.push((false, false));
                        i += 1;
                    }
                } else if b[i..].starts_with(q.close.as_bytes()) {
                    out.extend_from_slice(q.close.as_bytes());
                    i += q.close.len();
                    state = State::Code;
                } else {
                    mask(&mut out, c);
                    i += 1;
                }
            }
            State::RawStr(hashes) => {
                if !c.is_ascii_whitespace() {
                    mark!(code);
                }
                let closes = c == b'"'
                    && b.len() >= i + 1 + hashes
                    && b[i + 1..i + 1 + hashes].iter().all(|&x| x == b'#');
                if closes {
                    out.extend_from_slice(&b[i..i + 1 + hashes]);
                    i += 1 + hashes;
                    state = State::Code;
                } else {
                    mask(&mut out, c);
                    i += 1;
                }
            }
            State::Regex { in_class } => {
                mark!(code);
                if c == b'\\' {
                    mask(&mut out, c);
                    i += 1;
                    if i < b.len() && b[i] != b'\n' {
                        mask(&mut out, b[i]);
                        i += 1;
                    }
                } else if c == b'[' {
                    mask(&mut out, c);
                    i += 1;
                    state = State::Regex { in_class: true };
                } else if c == b']' && in_class {
                    mask(&mut out, c);
                    i += 1;
                    state = State::Regex { in_class: false };
                } else if c == b'/' && !in_class {
                    out.push(b'/');
                    i += 1;
                    last_sig = Some(b'/');
                    last_word_end = 0;
                    state = State::Code;
                } else {
                    mask(&mut out, c);
                    i += 1;
                }
            }
        }
    }

    // Every masked region covers whole characters, so this cannot fail; be
    // lenient all the same.
    let masked = String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let mut lines = Vec::with_capacity(flags.len());
    let mut text_rest = src;
    let mut code_rest = masked.as_str();
    for (n, (has_code, has_comment)) in flags.into_iter().enumerate() {
        if text_rest.is_empty() && n > 0 {
            break; // a trailing newline does not start another line
        }
        let (t, tr) = split_line(text_rest);
        let (k, kr) = split_line(code_rest);
        text_rest = tr;
        code_rest = kr;
        // A CR before the LF goes from both (masked inside a string it is
        // a space, still one byte), so offsets keep matching.
        let (t, k) = match t.strip_suffix('\r') {
            Some(t) => (t, k.get(..k.len().saturating_sub(1)).unwrap_or(k)),
            None => (t, k),
        };
        lines.push(Line {
            text: t,
            code: k.to_string(),
            has_code,
            has_comment,
        });
    }
    if src.is_empty() {
        lines.clear();
    }
    lines
}

fn split_line(s: &str) -> (&str, &str) {
    match s.find('\n') {
        Some(p) => (&s[..p], &s[p + 1..]),
        None => (s, ""),
    }
}

/// The length of a Rust raw-string opener (`r"`, `r#"`, `br##"`, `cr"`) at
/// `i`, if one starts there.
fn rust_raw_open(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_ident(b[i - 1]) {
        return None;
    }
    let mut j = i;
    if j < b.len() && (b[j] == b'b' || b[j] == b'c') {
        j += 1;
    }
    if j >= b.len() || b[j] != b'r' {
        return None;
    }
    j += 1;
    while j < b.len() && b[j] == b'#' {
        j += 1;
    }
    (j < b.len() && b[j] == b'"').then_some(j + 1 - i)
}

/// The length of a Rust char literal (`'a'`, `'\n'`, `'\u{1F600}'`, `'é'`)
/// starting at `i`, or `None` for a lifetime or label.
fn rust_char_len(b: &[u8], i: usize) -> Option<usize> {
    let next = *b.get(i + 1)?;
    if next == b'\\' {
        // An escape: find the closing quote within a short distance.
        let end = b[i + 2..]
            .iter()
            .take(12)
            .position(|&x| x == b'\'' || x == b'\n')?;
        return (b[i + 2 + end] == b'\'').then_some(end + 3);
    }
    if next == b'\'' || next == b'\n' {
        return None;
    }
    let width = match next {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    (b.get(i + 1 + width) == Some(&b'\'')).then_some(width + 2)
}

/// Whether a `/` in code opens a regular expression rather than dividing:
/// it does after an operator, an opening bracket, the start of the text, or
/// a keyword such as `return`. Not after `<`, which in JSX closes a tag
/// (`</div>`).
fn regex_may_start(out: &[u8], last_sig: Option<u8>, last_word_end: usize) -> bool {
    let Some(prev) = last_sig else { return true };
    if b"(,=:[!&|?{};+-*%>~^".contains(&prev) {
        return true;
    }
    if is_ident(prev) && last_word_end == out.len_trimmed() {
        let word_start = out[..last_word_end]
            .iter()
            .rposition(|&x| !is_ident(x))
            .map_or(0, |p| p + 1);
        let word = &out[word_start..last_word_end];
        return matches!(
            word,
            b"return"
                | b"typeof"
                | b"case"
                | b"do"
                | b"else"
                | b"in"
                | b"of"
                | b"void"
                | b"yield"
                | b"await"
                | b"delete"
                | b"throw"
                | b"new"
        );
    }
    false
}

trait TrimmedLen {
    fn len_trimmed(&self) -> usize;
}

impl TrimmedLen for [u8] {
    /// The length without trailing ASCII whitespace.
    fn len_trimmed(&self) -> usize {
        self.iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |p| p + 1)
    }
}

// ---- helpers for the language scanners ---------------------------------------

/// The bracket depth (`open`/`close`) at the start of every line, counted on
/// the masked text; never below zero.
pub fn depths(lines: &[Line], open: u8, close: u8) -> Vec<usize> {
    let mut d: usize = 0;
    lines
        .iter()
        .map(|l| {
            let at_start = d;
            for &c in l.code.as_bytes() {
                if c == open {
                    d += 1;
                } else if c == close {
                    d = d.saturating_sub(1);
                }
            }
            at_start
        })
        .collect()
}

/// Is `c` part of an identifier (`$` included, for JavaScript)?
pub fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// The identifier at the start of `s`.
pub fn ident(s: &str) -> Option<&str> {
    let end = s.find(|c: char| !ident_char(c)).unwrap_or(s.len());
    let id = &s[..end];
    (!id.is_empty() && !id.starts_with(|c: char| c.is_ascii_digit())).then_some(id)
}

/// If `s` starts with the keyword `w` (followed by a non-identifier
/// character or the end), what follows it, left-trimmed.
pub fn keyword<'a>(s: &'a str, w: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(w)?;
    if rest.starts_with(ident_char) {
        return None;
    }
    Some(rest.trim_start())
}

/// The first string literal at or after byte `from` of the masked `code`:
/// its value, cut from `text` (same offsets), and the offset after it.
pub fn string_at(code: &str, text: &str, from: usize) -> Option<(String, usize)> {
    let bytes = code.as_bytes();
    let start = from + code.get(from..)?.find(['"', '\'', '`'])?;
    let q = bytes[start];
    let end = start + 1 + bytes[start + 1..].iter().position(|&c| c == q)?;
    Some((text.get(start + 1..end)?.to_string(), end + 1))
}

/// Collapse runs of whitespace to one space.
pub fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const C_LIKE: Syntax = Syntax {
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

    #[test]
    fn masks_comments_and_string_contents_keeping_offsets() {
        let src = "let a = \"x // y\"; // note\n/* a\n /* nested */ b */ fn f() {}\n";
        let lines = scan(src, &C_LIKE);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].code.trim_end(), "let a = \"      \";");
        assert!(lines[0].has_code && lines[0].has_comment);
        assert!(!lines[1].has_code && lines[1].has_comment);
        assert_eq!(lines[2].code.trim(), "fn f() {}");
        for l in &lines {
            assert_eq!(l.code.len(), l.text.len());
        }
        let (v, _) = string_at(&lines[0].code, lines[0].text, 0).unwrap();
        assert_eq!(v, "x // y");
    }

    #[test]
    fn rust_chars_lifetimes_and_raw_strings() {
        let src = "fn f<'a>(x: &'a str) -> char { '{' }\nlet r = r#\"}\"#; let c = '\\'';\n";
        let lines = scan(src, &C_LIKE);
        let d = depths(&lines, b'{', b'}');
        assert_eq!(d, vec![0, 0]);
        assert!(lines[0].code.contains("&'a str"));
        assert!(!lines[1].code.contains('}'));
    }

    #[test]
    fn multibyte_text_survives_masking() {
        let src = "// héllo wörld\nlet s = \"日本語\"; let c = 'é';\n";
        let lines = scan(src, &C_LIKE);
        assert_eq!(lines[1].code.len(), lines[1].text.len());
        assert_eq!(
            string_at(&lines[1].code, lines[1].text, 0).unwrap().0,
            "日本語"
        );
    }

    #[test]
    fn empty_and_unterminated_inputs() {
        assert!(scan("", &C_LIKE).is_empty());
        let lines = scan("a\n\nb", &C_LIKE);
        assert_eq!(lines.len(), 3);
        let lines = scan("/* never closed\nstill comment", &C_LIKE);
        assert!(lines.iter().all(|l| !l.has_code));
    }
}
