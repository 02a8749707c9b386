//! Splitting a chunked byte stream into lines without allocating per line.

/// Reassembles lines across chunks. A line is handed out as a slice of the chunk when it
/// lies inside one (the common case) and copied into a reused buffer only when it spans
/// chunks. Lines longer than `max` are cut to `max` bytes and flagged.
pub(crate) struct Lines {
    carry: Vec<u8>,
    max: usize,
    overflow: bool,
}

impl Lines {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            carry: Vec::new(),
            max: max.max(1),
            overflow: false,
        }
    }

    /// Calls `f(line, truncated)` for every line `chunk` completes (without the `\n`).
    pub(crate) fn feed<E>(&mut self, chunk: &[u8], mut f: impl FnMut(&[u8], bool) -> Result<(), E>) -> Result<(), E> {
        let mut rest = chunk;
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let segment = &rest[..pos];
            rest = &rest[pos + 1..];
            if self.carry.is_empty() && !self.overflow {
                if segment.len() > self.max {
                    f(&segment[..self.max], true)?;
                } else {
                    f(segment, false)?;
                }
            } else {
                let room = self.max - self.carry.len();
                let truncated = self.overflow || segment.len() > room;
                self.carry.extend_from_slice(&segment[..segment.len().min(room)]);
                let result = f(&self.carry, truncated);
                self.carry.clear();
                self.overflow = false;
                result?;
            }
        }
        if !rest.is_empty() {
            let room = self.max - self.carry.len();
            if rest.len() > room {
                self.overflow = true;
            }
            self.carry.extend_from_slice(&rest[..rest.len().min(room)]);
        }
        Ok(())
    }

    /// Whether the unfinished line already exceeds the maximum.
    pub(crate) fn overflowing(&self) -> bool {
        self.overflow
    }

    /// Hands out a last line that had no `\n`.
    pub(crate) fn finish<E>(&mut self, mut f: impl FnMut(&[u8], bool) -> Result<(), E>) -> Result<(), E> {
        if self.carry.is_empty() && !self.overflow {
            return Ok(());
        }
        let result = f(&self.carry, self.overflow);
        self.carry.clear();
        self.overflow = false;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]], max: usize) -> Vec<(String, bool)> {
        let mut lines = Lines::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            lines
                .feed::<()>(chunk, |l, t| {
                    out.push((String::from_utf8_lossy(l).into_owned(), t));
                    Ok(())
                })
                .unwrap();
        }
        lines
            .finish::<()>(|l, t| {
                out.push((String::from_utf8_lossy(l).into_owned(), t));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn lines_are_reassembled_across_chunks() {
        let got = collect(&[b"ab\ncd", b"ef\n", b"\ngh"], 100);
        let want = [("ab", false), ("cdef", false), ("", false), ("gh", false)];
        assert_eq!(got, want.map(|(l, t)| (l.to_owned(), t)));
    }

    #[test]
    fn long_lines_are_cut_and_flagged() {
        let got = collect(&[b"abcdef\nab", b"cdefgh\nxy\n"], 4);
        let want = [("abcd", true), ("abcd", true), ("xy", false)];
        assert_eq!(got, want.map(|(l, t)| (l.to_owned(), t)));
    }
}
