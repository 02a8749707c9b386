//! Shell text as the docs show it: fenced blocks, commands, words.

/// One command shown in the docs: where, and its text (continuation lines joined,
/// comment stripped).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Shown {
    pub(super) file: String,
    pub(super) line: usize,
    pub(super) text: String,
}

/// A fenced shell block: its commands, and whether it is marked not to run.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Block {
    pub(super) skip: bool,
    pub(super) commands: Vec<Shown>,
}

/// The shell blocks of `markdown` (in `section`, if given).
pub(super) fn blocks(file: &str, markdown: &str, section: Option<&str>) -> Vec<Block> {
    let mut found = Vec::new();
    let mut in_section = section.is_none();
    let mut lines = markdown.lines().enumerate().peekable();
    let mut skip_next = false;
    while let Some((i, line)) = lines.next() {
        if let Some(heading) = section {
            if line.starts_with('#') && !line.starts_with("#!") {
                in_section = line.trim() == heading;
                continue;
            }
        }
        if !in_section {
            continue;
        }
        if line.trim() == "<!-- docs-test: skip -->" {
            skip_next = true;
            continue;
        }
        let fence = line.trim_start();
        let Some(lang) = fence.strip_prefix("```") else {
            if !line.trim().is_empty() {
                skip_next = false;
            }
            continue;
        };
        let shell = matches!(lang.trim(), "sh" | "bash" | "shell");
        let mut body = Vec::new();
        for (j, inner) in lines.by_ref() {
            if inner.trim_start().starts_with("```") {
                break;
            }
            body.push((j + 1, inner));
        }
        if shell {
            found.push(Block {
                skip: skip_next,
                commands: commands(file, &body),
            });
        }
        skip_next = false;
        let _ = i;
    }
    found
}

/// The commands of a block's lines: a line continued by `\` or by an open quote joins the
/// next, comments go, and `;` outside quotes and `$(…)` separates commands; a here-document
/// (`<<'EOF'` … `EOF`) belongs to its command as it is.
pub(super) fn commands(file: &str, lines: &[(usize, &str)]) -> Vec<Shown> {
    let mut out: Vec<Shown> = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut scan = Scan::default();
    let mut here_document: Option<String> = None;
    for &(number, line) in lines {
        if let Some(end) = &here_document {
            if let Some(command) = out.last_mut() {
                command.text.push('\n');
                command.text.push_str(line);
            }
            if line.trim() == end {
                here_document = None;
            }
            continue;
        }
        if current.is_empty() {
            start = number;
        }
        let (pieces, continued) = scan.split(line);
        for (k, piece) in pieces.iter().enumerate() {
            current.push_str(piece);
            let last = k + 1 == pieces.len();
            if !last || !continued {
                let text = current.trim().to_owned();
                if !text.is_empty() {
                    here_document = here_document_end(&text);
                    out.push(Shown {
                        file: file.to_owned(),
                        line: start,
                        text,
                    });
                }
                current.clear();
                start = number;
            }
        }
        if continued {
            current.push('\n');
        }
    }
    out
}

/// The word that ends the here-document `text` starts (`cat > f <<'EOF'`: `EOF`).
pub(super) fn here_document_end(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("<<")?;
    if rest.starts_with('<') {
        return None;
    }
    let word = rest.trim_start_matches('-').split_whitespace().next()?;
    Some(word.trim_matches(|c| c == '\'' || c == '"').to_owned())
}

/// Where a scan of shell text is: inside which quotes and how deep in `$(…)`.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) quote: Option<char>,
    pub(super) depth: usize,
}

impl Scan {
    /// `line` cut at its top-level `;`s, without its comment; and whether the command
    /// goes on on the next line (a trailing `\`, an open quote or `$(`).
    pub(super) fn split(&mut self, line: &str) -> (Vec<String>, bool) {
        let mut pieces = vec![String::new()];
        let mut chars = line.chars().peekable();
        let mut previous = ' ';
        while let Some(c) = chars.next() {
            let piece = pieces.last_mut().unwrap_or_else(|| unreachable!());
            match (self.quote, c) {
                (Some(q), c) if c == q => {
                    self.quote = None;
                    piece.push(c);
                }
                (Some('"'), '\\') => {
                    piece.push(c);
                    if let Some(next) = chars.next() {
                        piece.push(next);
                    }
                }
                (Some(_), c) => piece.push(c),
                (None, '\'' | '"') => {
                    self.quote = Some(c);
                    piece.push(c);
                }
                (None, '#') if previous.is_whitespace() => break,
                (None, '(') => {
                    self.depth += 1;
                    piece.push(c);
                }
                (None, ')') => {
                    self.depth = self.depth.saturating_sub(1);
                    piece.push(c);
                }
                (None, ';') if self.depth == 0 => pieces.push(String::new()),
                (None, c) => piece.push(c),
            }
            previous = c;
        }
        let last = pieces.last_mut().unwrap_or_else(|| unreachable!());
        let trimmed = last.trim_end().to_owned();
        let backslash = self.quote.is_none() && trimmed.ends_with('\\');
        if backslash {
            *last = trimmed.trim_end_matches('\\').to_owned();
        }
        (pieces, backslash || self.quote.is_some() || self.depth > 0)
    }
}

/// `text` as words, as a shell without expansions would split it (quotes removed).
pub(super) fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.get_or_insert_with(String::new).extend(chars.next()),
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '\\') => word.get_or_insert_with(String::new).extend(chars.next()),
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The flexctl command line of `text`, when it is one (up to a redirection or a pipe).
pub(super) fn flexctl_words(text: &str) -> Option<Vec<String>> {
    let all = words(text);
    let start = all.iter().position(|w| w == "flexctl" || w.ends_with("/flexctl"))?;
    // Only when flexctl is the command itself (`mkdir -p … && flexctl …` too).
    if start > 0 && !matches!(all[start - 1].as_str(), "&&" | "||" | "|") {
        return None;
    }
    let end = all[start..]
        .iter()
        .position(|w| {
            // A redirection (`>f`, `2>&1`, `<in`) or what joins the next command.
            w.trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with(['>', '<'])
                || matches!(w.as_str(), "|" | "&&" | "||")
        })
        .map_or(all.len(), |n| start + n);
    Some(all[start..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_into_commands_as_a_shell_would() {
        let md = "# T\n## Quick start\nx\n```sh\na --b 'c; d' # note\ne; f \"g\\\" #h\" \\\n  --i\nX=$(curl -d '{\"a\":\n 1}' | jq .a)\n```\n<!-- docs-test: skip -->\n```bash\nflexctl dev\n```\n```yaml\nk: v\n```\n## Next\n```sh\nnot me\n```\n";
        let found = blocks("f.md", md, Some("## Quick start"));
        assert_eq!(found.len(), 2, "{found:?}");
        let texts: Vec<&str> = found[0].commands.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "a --b 'c; d'",
                "e",
                "f \"g\\\" #h\" \n  --i",
                "X=$(curl -d '{\"a\":\n 1}' | jq .a)"
            ]
        );
        assert_eq!(found[0].commands[0].line, 5);
        assert_eq!(found[0].commands[2].line, 6);
        assert_eq!(found[0].commands[3].line, 8);
        assert!(!found[0].skip && found[1].skip);

        let here = "```sh\ncat > p.yaml <<'EOF'\nname: x # not a comment\nEOF\nflexctl x -f p.yaml\n```\n";
        let found = blocks("f.md", here, None);
        let texts: Vec<&str> = found[0].commands.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "cat > p.yaml <<'EOF'\nname: x # not a comment\nEOF",
                "flexctl x -f p.yaml"
            ]
        );
    }
}
