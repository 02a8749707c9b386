//! A small streaming CSV reader (RFC 4180): comma-separated fields, fields in double
//! quotes may contain commas, newlines and doubled quotes (`""`), lines end in LF or CRLF.
//! A stray quote inside an unquoted field is kept literally rather than rejected.

use std::io::BufRead;

use flexcore_plugin_sdk::{FailureKind, PluginError};

/// Reads records (lists of fields) from a [`BufRead`].
pub struct CsvReader<R> {
    reader: R,
    line: String,
    line_number: u64,
    record_line: u64,
}

impl<R: BufRead> CsvReader<R> {
    /// Reads from `reader`.
    pub fn new(reader: R) -> CsvReader<R> {
        CsvReader {
            reader,
            line: String::new(),
            line_number: 0,
            record_line: 0,
        }
    }

    /// The 1-based line on which the last returned record started.
    pub fn record_line(&self) -> u64 {
        self.record_line
    }

    fn read_line(&mut self) -> Result<bool, PluginError> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line)?;
        if n > 0 {
            self.line_number += 1;
        }
        Ok(n > 0)
    }

    /// Reads the next record into `fields` (cleared first); `false` at end of input.
    /// Blank lines are skipped.
    pub fn next_record(&mut self, fields: &mut Vec<String>) -> Result<bool, PluginError> {
        loop {
            if !self.read_line()? {
                fields.clear();
                return Ok(false);
            }
            if !self.line.trim_end_matches(['\r', '\n']).is_empty() {
                break;
            }
        }
        self.record_line = self.line_number;
        if !self.line.contains('"') {
            // No quotes: the record is this line, split at every comma (the strings of
            // the previous record are reused).
            let content = self.line.strip_suffix('\n').unwrap_or(&self.line);
            let content = content.strip_suffix('\r').unwrap_or(content);
            let mut n = 0;
            for part in content.split(',') {
                match fields.get_mut(n) {
                    Some(field) => {
                        field.clear();
                        field.push_str(part);
                    }
                    None => fields.push(part.to_owned()),
                }
                n += 1;
            }
            fields.truncate(n);
            return Ok(true);
        }
        fields.clear();
        let mut field = String::new();
        let mut in_quotes = false;
        // Whether the current field started with a quote (so its closing quote is syntax).
        let mut quoted = false;
        loop {
            let mut chars = self.line.chars().peekable();
            while let Some(c) = chars.next() {
                if in_quotes {
                    if c == '"' {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            field.push('"');
                        } else {
                            in_quotes = false;
                        }
                    } else {
                        field.push(c);
                    }
                    continue;
                }
                match c {
                    ',' => {
                        fields.push(std::mem::take(&mut field));
                        quoted = false;
                    }
                    '"' if field.is_empty() && !quoted => {
                        in_quotes = true;
                        quoted = true;
                    }
                    '\n' => break,
                    '\r' if matches!(chars.peek(), None | Some('\n')) => break,
                    c => field.push(c),
                }
            }
            if !in_quotes {
                fields.push(field);
                return Ok(true);
            }
            if !self.read_line()? {
                return Err(PluginError::new(
                    FailureKind::Data,
                    format_args!(
                        "unterminated quoted field in the record starting on line {}",
                        self.record_line
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Vec<String>> {
        let mut reader = CsvReader::new(text.as_bytes());
        let mut out = Vec::new();
        let mut fields = Vec::new();
        while reader.next_record(&mut fields).unwrap() {
            out.push(fields.clone());
        }
        out
    }

    #[test]
    fn plain_and_quoted_fields() {
        assert_eq!(parse("a,b,c\n1,,3\n"), vec![vec!["a", "b", "c"], vec!["1", "", "3"]]);
        assert_eq!(
            parse("\"x, y\",\"say \"\"hi\"\"\"\r\nz,\"\"\r\n"),
            vec![vec!["x, y", "say \"hi\""], vec!["z", ""]]
        );
    }

    #[test]
    fn newlines_inside_quotes_and_blank_lines() {
        let mut reader = CsvReader::new("a,b\n\n\"multi\r\nline\",2\nlast,3".as_bytes());
        let mut fields = Vec::new();
        assert!(reader.next_record(&mut fields).unwrap());
        assert!(reader.next_record(&mut fields).unwrap());
        assert_eq!(fields, vec!["multi\r\nline", "2"]);
        assert_eq!(reader.record_line(), 3);
        assert!(reader.next_record(&mut fields).unwrap());
        assert_eq!(fields, vec!["last", "3"]);
        assert!(!reader.next_record(&mut fields).unwrap());
    }

    #[test]
    fn lines_without_quotes_split_like_quoted_ones() {
        assert_eq!(
            parse("a,b\r\r\nx\ry,,\r\n,\n\nlast"),
            vec![vec!["a", "b\r"], vec!["x\ry", "", ""], vec!["", ""], vec!["last"]]
        );
        // Fewer fields than the record before: none of its fields are left over.
        assert_eq!(parse("1,2,3\n4\n"), vec![vec!["1", "2", "3"], vec!["4"]]);
    }

    #[test]
    fn stray_quotes_are_literal_and_unterminated_quotes_fail() {
        assert_eq!(parse("ab\"c,d\n"), vec![vec!["ab\"c", "d"]]);
        let mut reader = CsvReader::new("a\n\"open,\n".as_bytes());
        let mut fields = Vec::new();
        assert!(reader.next_record(&mut fields).unwrap());
        let e = reader.next_record(&mut fields).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unterminated quoted field in the record starting on line 2"
        );
    }
}
