//! Result tables the way the isolation tester prints them (libpq's `PQprint` with a header,
//! alignment and `|` between fields): each column as wide as its longest value or name in bytes,
//! a column right-aligned when every non-empty value in it looks like a number, and `(N rows)`.

/// A result set: column names and rows of text values (`None`: SQL NULL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// The column names.
    pub columns: Vec<String>,
    /// The rows, as the server sent them in text format.
    pub rows: Vec<Vec<Option<String>>>,
}

/// Whether a value keeps its column numeric: only digits, `.`, `E`/`e`, spaces and `-`, not
/// starting with `E`/`e`, ending with a digit (libpq's test, byte by byte).
fn looks_numeric(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes
        .iter()
        .any(|b| !(b.is_ascii_digit() || matches!(b, b'.' | b'E' | b'e' | b' ' | b'-')))
    {
        return false;
    }
    !matches!(bytes.first(), Some(b'E' | b'e')) && bytes.last().is_some_and(u8::is_ascii_digit)
}

fn pad(out: &mut String, value: &str, width: usize, right: bool) {
    let fill = " ".repeat(width.saturating_sub(value.len()));
    if right {
        out.push_str(&fill);
        out.push_str(value);
    } else {
        out.push_str(value);
        out.push_str(&fill);
    }
}

/// Appends `table` to `out` as the tester prints it; a result without columns prints nothing.
pub fn print_table(out: &mut String, table: &Table) {
    let n = table.columns.len();
    if n == 0 {
        return;
    }
    let mut width: Vec<usize> = table.columns.iter().map(String::len).collect();
    let mut numeric = vec![true; n];
    for row in &table.rows {
        for (j, value) in row.iter().enumerate().take(n) {
            let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else {
                continue;
            };
            if numeric[j] && !looks_numeric(v) {
                numeric[j] = false;
            }
            width[j] = width[j].max(v.len());
        }
    }
    let border: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    for (j, name) in table.columns.iter().enumerate() {
        pad(out, name, width[j], numeric[j]);
        if j + 1 < n {
            out.push('|');
        }
    }
    out.push('\n');
    out.push_str(&border.join("+"));
    out.push('\n');
    for row in &table.rows {
        for j in 0..n {
            let v = row.get(j).cloned().flatten().unwrap_or_default();
            pad(out, &v, width[j], numeric[j]);
            if j + 1 < n {
                out.push('|');
            }
        }
        out.push('\n');
    }
    let count = table.rows.len();
    out.push_str(&format!(
        "({count} row{})\n\n",
        if count == 1 { "" } else { "s" }
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: &[&str], rows: &[&[Option<&str>]]) -> String {
        let t = Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|v| v.map(str::to_owned)).collect())
                .collect(),
        };
        let mut out = String::new();
        print_table(&mut out, &t);
        out
    }

    #[test]
    fn numbers_go_right_text_goes_left_and_nulls_are_blank() {
        assert_eq!(
            table(
                &["id", "name"],
                &[&[Some("1"), Some("alpha")], &[Some("10"), None]]
            ),
            "id|name \n--+-----\n 1|alpha\n10|     \n(2 rows)\n\n"
        );
        assert_eq!(table(&["k"], &[]), "k\n-\n(0 rows)\n\n");
        assert_eq!(
            table(&["v"], &[&[Some("-1.5e3")], &[Some("e1")]]),
            "v     \n------\n-1.5e3\ne1    \n(2 rows)\n\n"
        );
        assert_eq!(table(&[], &[&[]]), "");
        assert_eq!(table(&["t"], &[&[Some("1.")]]), "t \n--\n1.\n(1 row)\n\n");
    }
}
