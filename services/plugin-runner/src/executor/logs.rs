//! A stage's stderr, line by line, as bounded [`ExecEvent::Log`] events.
//!
//! Bounded three ways: the stage's stderr byte cap (enforced by its pipe: crossing it fails
//! the stage with `output_limit`), lines cut at `max_line_bytes`, and at most
//! `lines_per_second` lines per stage and second — the rest of that second is dropped,
//! announced by a single "log truncated" line.
//!
//! Secrets are redacted before a line is cut: a line is read up to the redactor's
//! lookahead past the cut, so a secret straddling it is matched whole and replaced, never
//! left as a prefix.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use super::lines::Lines;
use super::pipe::PipeReader;
use super::redact::Redactor;
use super::{Emitter, ExecEvent};

/// Rate limit state: one window per second.
struct Window {
    start: Instant,
    used: u32,
    announced: bool,
    per_second: u32,
}

impl Window {
    fn admit(&mut self, now: Instant) -> Admit {
        if now.duration_since(self.start) >= Duration::from_secs(1) {
            self.start = now;
            self.used = 0;
            self.announced = false;
        }
        if self.used < self.per_second {
            self.used += 1;
            Admit::Yes
        } else if !self.announced {
            self.announced = true;
            Admit::Announce
        } else {
            Admit::No
        }
    }
}

enum Admit {
    Yes,
    Announce,
    No,
}

/// The line as text: lossy UTF-8, without its `\r`, secrets redacted, cut to `max` bytes.
/// `truncated`: the line was already cut (at `max` plus the redactor's lookahead).
fn text(line: &[u8], truncated: bool, max: usize, redactor: &Redactor) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (mut text, cut) = redactor.redact_prefix(&String::from_utf8_lossy(line), max);
    if truncated || cut {
        text.push_str(" …[truncated]");
    }
    text
}

/// Forwards `input` until its end (the stage's end), even after an abort: a failing
/// stage's last words are usually the useful ones. Returns them: the last non-blank line,
/// redacted and cut like the logged ones (even one the rate limit dropped), which a
/// failed exit quotes in the run's error.
pub(crate) async fn forward(
    input: PipeReader,
    step: usize,
    plugin: &str,
    events: &Emitter,
    max_line_bytes: usize,
    lines_per_second: u32,
) -> Option<String> {
    let redactor = events.redactor().clone();
    let mut lines = Lines::new(max_line_bytes.saturating_add(redactor.lookahead()));
    let mut window = Window {
        start: Instant::now(),
        used: 0,
        announced: false,
        per_second: lines_per_second,
    };
    let mut batch: Vec<String> = Vec::new();
    let mut last: (Vec<u8>, bool) = (Vec::new(), false);
    let mut collect = |line: &[u8], truncated: bool, batch: &mut Vec<String>| {
        if !line.trim_ascii().is_empty() {
            last.0.clear();
            last.0.extend_from_slice(line);
            last.1 = truncated;
        }
        match window.admit(Instant::now()) {
            Admit::Yes => batch.push(text(line, truncated, max_line_bytes, &redactor)),
            Admit::Announce => batch.push(format!(
                "[flexcore] log truncated: more than {lines_per_second} lines in one second, dropping the rest of it"
            )),
            Admit::No => {}
        }
        Ok::<(), Infallible>(())
    };
    loop {
        let chunk = input.chunk().await;
        let _ = match &chunk {
            Some(chunk) => lines.feed(chunk, |l, t| collect(l, t, &mut batch)),
            None => lines.finish(|l, t| collect(l, t, &mut batch)),
        };
        for line in batch.drain(..) {
            events
                .emit(
                    ExecEvent::Log {
                        step,
                        plugin: plugin.to_owned(),
                        line,
                    },
                    false,
                )
                .await;
        }
        if chunk.is_none() {
            break;
        }
    }
    let (line, truncated) = last;
    (!line.is_empty()).then(|| text(&line, truncated, max_line_bytes, &redactor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_admits_n_lines_then_announces_once_then_resets() {
        let t0 = Instant::now();
        let mut w = Window {
            start: t0,
            used: 0,
            announced: false,
            per_second: 2,
        };
        assert!(matches!(w.admit(t0), Admit::Yes));
        assert!(matches!(w.admit(t0), Admit::Yes));
        assert!(matches!(w.admit(t0), Admit::Announce));
        assert!(matches!(w.admit(t0), Admit::No));
        assert!(matches!(w.admit(t0 + Duration::from_secs(1)), Admit::Yes));
    }

    #[test]
    fn lines_are_lossy_utf8_without_cr_and_marked_when_cut() {
        let none = Redactor::default();
        assert_eq!(text(b"hi\r", false, 100, &none), "hi");
        assert_eq!(text(b"a\xffb", true, 100, &none), "a\u{fffd}b …[truncated]");
        assert_eq!(text(b"abcdef", false, 4, &none), "abcd …[truncated]");
    }

    #[test]
    fn a_secret_across_the_cut_is_redacted_whole() {
        let redactor = Redactor::new(["s3cr3t-pass"]);
        assert_eq!(
            text(b"xx s3cr3t-pass yy", false, 6, &redactor),
            "xx [redacted] …[truncated]"
        );
    }
}
