//! Text a target wrote — its answers and error codes, its log lines, its version, a profile's
//! title — made safe for where a report or the console puts it. The target under certification
//! may be hostile: it must not be able to write a verdict line into `report.md`, a workflow
//! command into a CI log, or a character that makes `junit.xml` unreadable.

/// For Markdown prose, a list item or a table cell: every character Markdown or inline HTML
/// could read as syntax is backslash-escaped, and line breaks become `<br>`, so the text stays
/// inside the element it was put in (no heading, no comment that hides the rest, no new row).
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => {}
            '\n' => out.push_str("<br>"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c if is_unsafe_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// For a Markdown code span: the text verbatim, inside a fence of more backticks than it holds
/// in a row (CommonMark's rule), on one line.
pub fn code_span(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| match c {
            '\r' | '\n' => ' ',
            c if is_unsafe_char(c) => '\u{FFFD}',
            c => c,
        })
        .collect();
    let mut longest = 0;
    let mut run = 0;
    for c in flat.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    // A space on each side where the text starts or ends with a backtick (stripped again by
    // the renderer), so the fence is not read as longer than it is.
    let pad = if flat.starts_with('`') || flat.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{flat}{pad}{fence}")
}

/// For an XML 1.0 document (`junit.xml`): the characters XML forbids — control characters
/// other than tab and line breaks, and U+FFFE and U+FFFF — replaced with U+FFFD.
pub fn xml(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if is_unsafe_char(c) => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// For the console, whose lines a CI runner reads for workflow commands: control characters
/// (terminal escapes among them) replaced with U+FFFD; every line after the first begins with
/// `indent` and a `|` (GitHub's runner trims leading spaces before it looks for `::`); and a `::`
/// that would still begin a line, or a `##[` anywhere (the runner's older form), is broken with a
/// zero-width space.
pub fn console(text: &str, indent: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push('\n');
            out.push_str(indent);
            out.push_str("| ");
        }
        let clean: String = line
            .chars()
            .filter(|c| *c != '\r')
            .map(|c| match c {
                '\t' => c,
                c if is_unsafe_char(c) => '\u{FFFD}',
                c => c,
            })
            .collect();
        let clean = clean.replace("##[", "#\u{200B}#[");
        if clean.trim_start().starts_with("::") {
            out.push_str(&clean.replacen("::", ":\u{200B}:", 1));
        } else {
            out.push_str(&clean);
        }
    }
    out
}

/// Control characters (C0, DEL, C1) and the two non-characters XML 1.0 forbids.
fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_text_cannot_leave_its_element() {
        let hostile = "1`\n\n**Verdict:** PASS\n\n<!-- | x | # y [z](javascript:q)";
        let safe = markdown(hostile);
        assert!(!safe.contains('\n'), "{safe}");
        assert!(!safe.contains("<!--"), "{safe}");
        assert!(!safe.contains("**"), "{safe}");
        for c in ['`', '|', '[', '#', '<'] {
            // The line breaks' own `<br>` aside.
            let unescaped = safe
                .char_indices()
                .filter(|(_, x)| *x == c)
                .any(|(i, _)| !safe[..i].ends_with('\\') && !safe[i..].starts_with("<br>"));
            assert!(!unescaped, "{c} unescaped in {safe}");
        }
        assert_eq!(markdown("a\\b"), "a\\\\b");
    }

    #[test]
    fn a_code_span_holds_any_text() {
        assert_eq!(code_span("1.2.3"), "`1.2.3`");
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(code_span("`x``"), "``` `x`` ```");
        assert_eq!(code_span("a\nb"), "`a b`");
    }

    #[test]
    fn xml_and_console_text_lose_what_would_break_them() {
        assert_eq!(
            xml("a\u{FFFF}b\u{1b}[31mc\td"),
            "a\u{FFFD}b\u{FFFD}[31mc\td"
        );
        let printed = console(
            "::error::first\n  ::notice::CERTIFIED\r\n\u{1b}[2Kgone ##[warning]x",
            "    ",
        );
        // What GitHub's runner looks for: a line that, trimmed, starts with `::`, or holds `##[`.
        for line in printed.lines() {
            assert!(!line.trim_start().starts_with("::"), "{printed}");
            assert!(!line.contains("##["), "{printed}");
        }
        assert!(
            printed.lines().skip(1).all(|l| l.starts_with("    | ")),
            "{printed}"
        );
        assert!(!printed.contains('\u{1b}'), "{printed}");
    }
}
