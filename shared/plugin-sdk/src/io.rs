//! Buffered message IO over stdout / stdin (or any writer / reader, for tests).

use std::io::{self, BufRead, BufWriter, StdinLock, StdoutLock, Write};

use crate::{Message, PluginError};

/// Default output buffer: large enough to amortise syscalls (and WASI host calls).
pub const OUTPUT_BUFFER: usize = 64 * 1024;

/// Buffered writer of Singer messages, one JSON object per line.
///
/// STATE messages are flushed at once so a checkpoint never waits in a buffer. A write
/// to a closed pipe yields [`PluginError::OutputClosed`], which the `run_*` helpers
/// turn into a quiet exit: the stage downstream has gone and decides the outcome.
#[derive(Debug)]
pub struct Output<W: Write = StdoutLock<'static>> {
    writer: BufWriter<W>,
}

impl Output {
    /// Output to the process's stdout.
    pub fn stdout() -> Output {
        Output::new(io::stdout().lock())
    }
}

impl<W: Write> Output<W> {
    /// Output to `writer` with a [`OUTPUT_BUFFER`]-byte buffer.
    pub fn new(writer: W) -> Output<W> {
        Output {
            writer: BufWriter::with_capacity(OUTPUT_BUFFER, writer),
        }
    }

    /// Writes one message (flushing after a STATE).
    pub fn write(&mut self, message: &Message) -> Result<(), PluginError> {
        message.write_to(&mut self.writer).map_err(PluginError::from_output)?;
        self.writer.write_all(b"\n").map_err(PluginError::from_output)?;
        if matches!(message, Message::State { .. }) {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes a line that is already serialised JSON (a newline is appended). Meant for
    /// hot loops that format records themselves; the caller vouches for its validity.
    pub fn write_line(&mut self, line: &str) -> Result<(), PluginError> {
        self.writer
            .write_all(line.as_bytes())
            .map_err(PluginError::from_output)?;
        self.writer.write_all(b"\n").map_err(PluginError::from_output)
    }

    /// The buffered writer, for writing a line in pieces (the caller ends it with `\n`).
    pub(crate) fn writer_mut(&mut self) -> &mut BufWriter<W> {
        &mut self.writer
    }

    /// Flushes the buffer to the underlying writer.
    pub fn flush(&mut self) -> Result<(), PluginError> {
        self.writer.flush().map_err(PluginError::from_output)
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(self) -> Result<W, PluginError> {
        self.writer
            .into_inner()
            .map_err(|e| PluginError::from_output(e.into_error()))
    }
}

/// Iterator over the Singer messages on stdin (or any [`BufRead`]); blank lines are
/// skipped and errors carry the 1-based line number.
#[derive(Debug)]
pub struct Input<R: BufRead = StdinLock<'static>> {
    reader: R,
    buf: String,
    line: u64,
}

impl Input {
    /// Input from the process's stdin.
    pub fn stdin() -> Input {
        Input::new(io::stdin().lock())
    }
}

impl<R: BufRead> Input<R> {
    /// Input from `reader`.
    pub fn new(reader: R) -> Input<R> {
        Input {
            reader,
            buf: String::with_capacity(1024),
            line: 0,
        }
    }

    /// Number of lines read so far.
    pub fn line_number(&self) -> u64 {
        self.line
    }
}

impl<R: BufRead> Input<R> {
    /// Reads the next line that is not blank into the buffer; `false` at the end.
    pub(crate) fn read_message_line(&mut self) -> Result<bool, PluginError> {
        loop {
            self.buf.clear();
            if self.reader.read_line(&mut self.buf).map_err(PluginError::Io)? == 0 {
                return Ok(false);
            }
            self.line += 1;
            if !self.buf.trim().is_empty() {
                return Ok(true);
            }
        }
    }

    /// The line [`Input::read_message_line`] read last.
    pub(crate) fn current_line(&self) -> &str {
        &self.buf
    }
}

impl<R: BufRead> Iterator for Input<R> {
    type Item = Result<Message, PluginError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.read_message_line() {
            Ok(false) => None,
            Ok(true) => {
                Some(Message::parse_line(&self.buf).map_err(|error| PluginError::Protocol { line: self.line, error }))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_skips_blank_lines_and_numbers_errors() {
        let text = "{\"type\":\"STATE\",\"value\":1}\n\n{\"type\":\"RECORD\"}\n";
        let mut input = Input::new(text.as_bytes());
        assert_eq!(input.next().unwrap().unwrap(), Message::state(json!(1)));
        let e = input.next().unwrap().unwrap_err();
        assert_eq!(e.to_string(), "line 3: RECORD without \"stream\"");
        assert!(input.next().is_none());
    }

    #[test]
    fn output_writes_lines() {
        let mut out = Output::new(Vec::new());
        out.write(&Message::record("s", json!({"a": 1}))).unwrap();
        out.write_line(r#"{"type":"STATE","value":2}"#).unwrap();
        let bytes = out.into_inner().unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\"type\":\"RECORD\",\"stream\":\"s\",\"record\":{\"a\":1}}\n{\"type\":\"STATE\",\"value\":2}\n"
        );
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn closed_pipe_is_reported_as_closed() {
        let mut out = Output::new(Closed);
        let e = out.write(&Message::state(json!(1))).unwrap_err();
        assert!(matches!(e, PluginError::OutputClosed), "{e:?}");
    }
}
