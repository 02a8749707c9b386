//! Refusals speak to operators: they name `flexctl` commands and HTTP routes, never a
//! command or query as its NATS name (`resume it with schedule.resume`), which nobody
//! types. Checked on the domain's source, so a new refusal cannot slip through untested.

use flexcore_contracts::commands::Command;

/// The domain's sources (the decisions and the errors they refuse with).
const SOURCES: &[(&str, &str)] = &[
    ("any.rs", include_str!("../any.rs")),
    ("error.rs", include_str!("../error.rs")),
    ("mod.rs", include_str!("../mod.rs")),
    ("pipeline.rs", include_str!("../pipeline.rs")),
    ("plugin.rs", include_str!("../plugin.rs")),
    ("run.rs", include_str!("../run.rs")),
    ("schedule.rs", include_str!("../schedule.rs")),
    ("validation.rs", include_str!("../validation.rs")),
];

/// The string literals of `source` outside comments (a `\` line continuation kept as is).
fn string_literals(source: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            // A char literal such as '"' is no string.
            '\'' if chars.peek() == Some(&'"') => {
                chars.next();
                chars.next();
            }
            '"' => {
                let mut literal = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                literal.push(escaped);
                            }
                        }
                        '"' => break,
                        c => literal.push(c),
                    }
                }
                literals.push(literal);
            }
            _ => {}
        }
    }
    literals
}

/// Whether `text` holds `name` as a whole word (`run.request` is not in `run.requested`).
fn names(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[test]
fn the_scanner_finds_literals_and_whole_names() {
    let literals = string_literals("let a = \"x \\\"q\\\" y\"; // \"comment\"\nlet b = '\"'; f(\"two\");");
    assert_eq!(literals, ["x \"q\" y", "two"]);
    assert!(names("resume it with schedule.resume", "schedule.resume"));
    assert!(names("`schedule.resume`", "schedule.resume"));
    assert!(!names("must be run.requested", "run.request"));
    assert!(!names("flexcore.cmd.run.request", "run.request"));
}

#[test]
fn no_refusal_text_in_the_domain_names_a_command_or_query_subject() {
    let mut subjects: Vec<String> = Command::ALL.iter().map(|(a, c)| format!("{a}.{c}")).collect();
    subjects.extend(flexcore_contracts::queries::ALL.iter().map(|q| (*q).to_owned()));
    let mut found = Vec::new();
    for (file, source) in SOURCES {
        for literal in string_literals(source) {
            for subject in &subjects {
                if names(&literal, subject) {
                    found.push(format!("{file}: {literal:?} names {subject}"));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "refusals must name the flexctl command and the HTTP route instead:\n{}",
        found.join("\n")
    );
}
