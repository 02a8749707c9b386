//! A stage's stderr, line by line, as bounded [`ExecEvent::Log`] events.
//!
//! Bounded three ways: the stage's stderr byte cap (enforced by its pipe: crossing it fails
//! the stage with `output_limit`), lines cut at `max_line_bytes`, and at most
//! `lines_per_second` lines per stage and second — the rest of that second is dropped,
//! announced by a single "log truncated" line.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use super::lines::Lines;
use super::pipe::PipeReader;
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

fn text(line: &[u8], truncated: bool) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::from_utf8_lossy(line).into_owned();
    if truncated {
        text.push_str(" …[truncated]");
    }
    text
}

/// Forwards `input` until its end (the stage's end), even after an abort: a failing
/// stage's last words are usually the useful ones.
pub(crate) async fn forward(
    input: PipeReader,
    step: usize,
    plugin: &str,
    events: &Emitter,
    max_line_bytes: usize,
    lines_per_second: u32,
) {
    let mut lines = Lines::new(max_line_bytes);
    let mut window = Window {
        start: Instant::now(),
        used: 0,
        announced: false,
        per_second: lines_per_second,
    };
    let mut batch: Vec<String> = Vec::new();
    let mut collect = |line: &[u8], truncated: bool, batch: &mut Vec<String>| {
        match window.admit(Instant::now()) {
            Admit::Yes => batch.push(text(line, truncated)),
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
            return;
        }
    }
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
        assert_eq!(text(b"hi\r", false), "hi");
        assert_eq!(text(b"a\xffb", true), "a\u{fffd}b …[truncated]");
    }
}
