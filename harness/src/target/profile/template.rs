//! Templates of a target profile: text with `{name}` placeholders (`{{` and `}}` for literal
//! braces). Each field of a profile allows its own set of names; a template is checked against it
//! when the profile loads, so a misspelt placeholder is an error naming the field, not a request
//! sent with `{worskpace}` in its path.

use std::collections::BTreeMap;

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Text sent as written.
    Text(String),
    /// A placeholder's name (`provider:qbo:token_url`, `workspace`).
    Name(String),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `raw`; `Err` says what is malformed.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!(
                                "an unclosed placeholder {{{name} (write {{{{ for a literal brace)"
                            ))
                            }
                            Some(c) => name.push(c),
                        }
                    }
                    if name.is_empty() {
                        return Err("an empty placeholder {}".into());
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Name(name));
                }
                '}' => return Err("a lone } (write }} for a literal brace)".into()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self { pieces })
    }

    /// The placeholders it uses, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Name(n) => Some(n.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// Checks that every placeholder is one `allowed` accepts; `Err` names the first that is not
    /// and lists what is allowed.
    pub fn check(&self, allowed: &dyn Fn(&str) -> bool, known: &str) -> Result<(), String> {
        match self.names().find(|n| !allowed(n)) {
            Some(n) => Err(format!("unknown placeholder {{{n}}} (known: {known})")),
            None => Ok(()),
        }
    }

    /// The text with each placeholder replaced by `quote(value)`; a name without a value is an
    /// error (the profile's checks make that a harness defect, not an auditor's).
    pub fn render(
        &self,
        values: &BTreeMap<String, String>,
        quote: &dyn Fn(&str) -> String,
    ) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Name(n) => {
                    let v = values
                        .get(n)
                        .ok_or_else(|| format!("no value for the placeholder {{{n}}}"))?;
                    out.push_str(&quote(v));
                }
            }
        }
        Ok(out)
    }

    /// The value a template that is exactly one placeholder stands for, unquoted (a claim that is
    /// a number stays one).
    pub fn sole_name(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece::Name(n)] => Some(n),
            _ => None,
        }
    }
}

/// The text as written.
pub fn verbatim(v: &str) -> String {
    v.to_owned()
}

/// A quoted SQL string literal (`'it''s'`): how fixture templates receive every value.
pub fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_escapes_and_errors() {
        let t = Template::parse("/v1/{workspace}/x?{query}&{{literal}}").unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["workspace", "query"]);
        let values = BTreeMap::from([
            ("workspace".to_owned(), "w1".to_owned()),
            ("query".to_owned(), "a=b".to_owned()),
        ]);
        assert_eq!(
            t.render(&values, &verbatim).unwrap(),
            "/v1/w1/x?a=b&{literal}"
        );
        assert!(t
            .check(&|n| n == "workspace", "workspace")
            .unwrap_err()
            .contains("{query}"));
        assert!(Template::parse("/v1/{workspace").is_err());
        assert!(Template::parse("a } b").is_err());
        assert!(Template::parse("{}").is_err());
        let sql = Template::parse("VALUES ({name})").unwrap();
        let name = BTreeMap::from([("name".to_owned(), "O'Brien".to_owned())]);
        assert_eq!(
            sql.render(&name, &sql_literal).unwrap(),
            "VALUES ('O''Brien')"
        );
        assert_eq!(Template::parse("{exp}").unwrap().sole_name(), Some("exp"));
    }
}
