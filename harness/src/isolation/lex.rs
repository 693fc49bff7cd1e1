//! The spec language's tokens. SQL blocks are kept as written between the braces, with the
//! spaces (not newlines) next to each brace trimmed: that is the text the tester prints, so the
//! output matches PostgreSQL's.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a spec went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct SpecError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What was wrong.
    pub message: String,
}

/// A token of the spec language.
#[derive(Clone, Debug, PartialEq)]
pub enum Token {
    /// `notices`, `permutation`, `session`, `setup`, `step` or `teardown`.
    Keyword(&'static str),
    /// A name, plain or `"quoted"`.
    Ident(String),
    /// The text of an SQL block `{ … }`.
    Sql(String),
    /// A number (of notices).
    Int(usize),
    /// `,`, `(`, `)` or `*`.
    Punct(char),
    /// The end of the file.
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Keyword(k) => write!(f, "`{k}`"),
            Token::Ident(i) => write!(f, "the name `{i}`"),
            Token::Sql(_) => write!(f, "an SQL block"),
            Token::Int(n) => write!(f, "the number {n}"),
            Token::Punct(c) => write!(f, "`{c}`"),
            Token::End => write!(f, "the end of the file"),
        }
    }
}

const KEYWORDS: &[&str] = &[
    "notices",
    "permutation",
    "session",
    "setup",
    "step",
    "teardown",
];

/// A token and where it starts.
pub struct Lexed {
    /// The token.
    pub token: Token,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Splits a spec into tokens, as the tester's scanner does: `#` comments, spaces and newlines
/// between tokens, SQL blocks taken whole.
pub fn lex(text: &str, file: &Path) -> Result<Vec<Lexed>, SpecError> {
    let chars: Vec<char> = text.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut out = Vec::new();
    let err = |line, column, message: String| SpecError {
        file: file.to_path_buf(),
        line,
        column,
        message,
    };
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\r' | '\x0c');
    while i < chars.len() {
        let c = chars[i];
        let (start_line, start_col) = (line, col);
        let bump = |i: &mut usize, line: &mut usize, col: &mut usize| {
            if chars[*i] == '\n' {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        };
        if c == '\n' || is_space(c) {
            bump(&mut i, &mut line, &mut col);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' && chars[i] != '\r' {
                bump(&mut i, &mut line, &mut col);
            }
        } else if c.is_ascii_alphabetic() || c == '_' || !c.is_ascii() {
            // As the tester's scanner: ASCII letters, `_` and any non-ASCII character start a
            // name; digits and `$` may follow.
            let mut word = String::new();
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == '$'
                    || !chars[i].is_ascii())
            {
                word.push(chars[i]);
                bump(&mut i, &mut line, &mut col);
            }
            let token = match KEYWORDS.iter().find(|k| **k == word) {
                Some(k) => Token::Keyword(k),
                None => Token::Ident(word),
            };
            out.push(Lexed {
                token,
                line: start_line,
                column: start_col,
            });
        } else if c == '"' {
            bump(&mut i, &mut line, &mut col);
            let mut name = String::new();
            loop {
                match chars.get(i) {
                    None => {
                        return Err(err(
                            start_line,
                            start_col,
                            "unterminated quoted identifier".into(),
                        ))
                    }
                    Some('\n') => {
                        return Err(err(
                            line,
                            col,
                            "unexpected newline in quoted identifier".into(),
                        ))
                    }
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        name.push('"');
                        bump(&mut i, &mut line, &mut col);
                        bump(&mut i, &mut line, &mut col);
                    }
                    Some('"') => {
                        bump(&mut i, &mut line, &mut col);
                        break;
                    }
                    Some(&ch) => {
                        name.push(ch);
                        bump(&mut i, &mut line, &mut col);
                    }
                }
            }
            out.push(Lexed {
                token: Token::Ident(name),
                line: start_line,
                column: start_col,
            });
        } else if c == '{' {
            bump(&mut i, &mut line, &mut col);
            while i < chars.len() && is_space(chars[i]) {
                bump(&mut i, &mut line, &mut col);
            }
            let mut sql = String::new();
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(err(start_line, start_col, "unterminated SQL block".into()));
                };
                bump(&mut i, &mut line, &mut col);
                if ch == '}' {
                    break;
                }
                sql.push(ch);
            }
            // The spaces before the closing brace are not part of the block (newlines are).
            while sql.ends_with(is_space) {
                sql.pop();
            }
            out.push(Lexed {
                token: Token::Sql(sql),
                line: start_line,
                column: start_col,
            });
        } else if c.is_ascii_digit() {
            let mut n = String::new();
            while i < chars.len() && chars[i].is_ascii_digit() {
                n.push(chars[i]);
                bump(&mut i, &mut line, &mut col);
            }
            let value = n
                .parse()
                .map_err(|_| err(start_line, start_col, format!("number {n} is too large")))?;
            out.push(Lexed {
                token: Token::Int(value),
                line: start_line,
                column: start_col,
            });
        } else if matches!(c, ',' | '(' | ')' | '*') {
            bump(&mut i, &mut line, &mut col);
            out.push(Lexed {
                token: Token::Punct(c),
                line: start_line,
                column: start_col,
            });
        } else {
            return Err(err(line, col, format!("unexpected character {c:?}")));
        }
    }
    out.push(Lexed {
        token: Token::End,
        line,
        column: col,
    });
    Ok(out)
}
