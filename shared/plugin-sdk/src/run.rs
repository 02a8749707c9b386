//! Entry helpers: each turns a closure into a complete plugin `main`.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use serde_json::Value;

use crate::{log, Args, Input, Level, Message, Output, PluginError};

/// Runs an extractor: parses the arguments, hands them and stdout to `f`, flushes.
///
/// ```no_run
/// use flexcore_plugin_sdk::{run_extractor, Message};
/// fn main() -> std::process::ExitCode {
///     run_extractor(|_args, out| out.write(&Message::state(serde_json::json!({}))))
/// }
/// ```
pub fn run_extractor(f: impl FnOnce(&Args, &mut Output) -> Result<(), PluginError>) -> ExitCode {
    let result = Args::from_env().map_err(PluginError::from).and_then(|args| {
        let mut out = Output::stdout();
        f(&args, &mut out)?;
        out.flush()
    });
    exit_code(result)
}

/// Runs a transformer: `init` builds the per-message function from the arguments, which
/// then sees every input message and returns what to emit instead (`vec![message]`
/// passes it through, `vec![]` drops it).
pub fn run_transformer<I, T>(init: I) -> ExitCode
where
    I: FnOnce(&Args) -> Result<T, PluginError>,
    T: FnMut(Message) -> Result<Vec<Message>, PluginError>,
{
    let result = Args::from_env()
        .map_err(PluginError::from)
        .and_then(|args| init(&args))
        .and_then(|f| transform(Input::stdin(), &mut Output::stdout(), f));
    exit_code(result)
}

/// The transformer loop behind [`run_transformer`], over any input and output.
pub fn transform<R, W, T>(input: Input<R>, output: &mut Output<W>, mut f: T) -> Result<(), PluginError>
where
    R: BufRead,
    W: Write,
    T: FnMut(Message) -> Result<Vec<Message>, PluginError>,
{
    for message in input {
        for out in f(message?)? {
            output.write(&out)?;
        }
    }
    output.flush()
}

/// What a loader is told.
#[derive(Debug)]
pub enum LoaderEvent<'a> {
    /// Any message except STATE.
    Message(Message),
    /// A STATE arrived; the SDK holds it until the loader answers [`LoaderAction::Durable`].
    State(&'a Value),
    /// Input is over: persist everything and answer `Durable` to echo the last STATE.
    End,
}

/// A loader's answer to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoaderAction {
    /// Nothing new is durable yet; keep holding the latest STATE.
    Pending,
    /// Every record received so far is durable: echo the latest held STATE now.
    Durable,
}

/// Runs a loader: `init` builds the event handler from the arguments. The SDK holds the
/// latest STATE and echoes it to stdout only when the handler reports
/// [`LoaderAction::Durable`], so an echoed STATE always means the records before it
/// are persisted.
pub fn run_loader<I, L>(init: I) -> ExitCode
where
    I: FnOnce(&Args) -> Result<L, PluginError>,
    L: FnMut(LoaderEvent<'_>) -> Result<LoaderAction, PluginError>,
{
    let result = Args::from_env()
        .map_err(PluginError::from)
        .and_then(|args| init(&args))
        .and_then(|f| load(Input::stdin(), &mut Output::stdout(), f));
    exit_code(result)
}

/// The loader loop behind [`run_loader`], over any input and output.
pub fn load<R, W, L>(input: Input<R>, output: &mut Output<W>, mut f: L) -> Result<(), PluginError>
where
    R: BufRead,
    W: Write,
    L: FnMut(LoaderEvent<'_>) -> Result<LoaderAction, PluginError>,
{
    let mut held: Option<Value> = None;
    for message in input {
        let action = match message? {
            Message::State { value } => f(LoaderEvent::State(held.insert(value)))?,
            other => f(LoaderEvent::Message(other))?,
        };
        echo_if_durable(action, &mut held, output)?;
    }
    let action = f(LoaderEvent::End)?;
    finish_load(action, held, output)
}

/// Echoes the held STATE if the loader said everything so far is durable.
pub(crate) fn echo_if_durable<W: Write>(
    action: LoaderAction,
    held: &mut Option<Value>,
    output: &mut Output<W>,
) -> Result<(), PluginError> {
    if action == LoaderAction::Durable {
        if let Some(value) = held.take() {
            output.write(&Message::State { value })?;
        }
    }
    Ok(())
}

/// The end of a loader's input: `action` is its answer to the end.
pub(crate) fn finish_load<W: Write>(
    action: LoaderAction,
    mut held: Option<Value>,
    output: &mut Output<W>,
) -> Result<(), PluginError> {
    match action {
        LoaderAction::Durable => {
            if let Some(value) = held.take() {
                output.write(&Message::State { value })?;
            }
        }
        LoaderAction::Pending if held.is_some() => {
            log(
                Level::Warning,
                "input ended with a STATE the loader did not confirm as durable; not echoed",
            );
        }
        LoaderAction::Pending => {}
    }
    output.flush()
}

/// Maps a plugin's result to its exit code: 0 on success or when stdout was closed
/// by the next stage (quietly), otherwise the error goes to stderr (as the last line, which
/// the runner puts into the run's error) and the code is its kind's
/// ([`crate::FailureKind::exit_status`]).
pub fn exit_code(result: Result<(), PluginError>) -> ExitCode {
    match result {
        Ok(()) | Err(PluginError::OutputClosed) => ExitCode::SUCCESS,
        Err(e) => {
            log(Level::Error, &e);
            ExitCode::from(e.kind().exit_status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(bytes: Vec<u8>) -> Vec<Message> {
        Input::new(bytes.as_slice()).map(|m| m.unwrap()).collect()
    }

    const STREAM: &str = concat!(
        r#"{"type":"SCHEMA","stream":"s","schema":{},"key_properties":[]}"#,
        "\n",
        r#"{"type":"RECORD","stream":"s","record":{"a":1}}"#,
        "\n",
        r#"{"type":"STATE","value":1}"#,
        "\n",
        r#"{"type":"RECORD","stream":"s","record":{"a":2}}"#,
        "\n",
        r#"{"type":"STATE","value":2}"#,
        "\n",
    );

    #[test]
    fn transform_applies_f_to_every_message() {
        let mut out = Output::new(Vec::new());
        transform(Input::new(STREAM.as_bytes()), &mut out, |m| match m {
            Message::Record { .. } => Ok(vec![]),
            other => Ok(vec![other]),
        })
        .unwrap();
        let got = lines(out.into_inner().unwrap());
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], Message::state(json!(2)));
    }

    #[test]
    fn loader_echoes_state_only_when_durable() {
        // Durable only at the end: only the last STATE is echoed.
        let mut out = Output::new(Vec::new());
        let mut events = Vec::new();
        load(Input::new(STREAM.as_bytes()), &mut out, |e| {
            events.push(format!("{e:?}"));
            Ok(if matches!(e, LoaderEvent::End) {
                LoaderAction::Durable
            } else {
                LoaderAction::Pending
            })
        })
        .unwrap();
        assert_eq!(lines(out.into_inner().unwrap()), vec![Message::state(json!(2))]);
        assert_eq!(events.len(), 6);

        // Durable at every STATE: each is echoed once.
        let mut out = Output::new(Vec::new());
        load(Input::new(STREAM.as_bytes()), &mut out, |e| {
            Ok(if matches!(e, LoaderEvent::State(_)) {
                LoaderAction::Durable
            } else {
                LoaderAction::Pending
            })
        })
        .unwrap();
        assert_eq!(
            lines(out.into_inner().unwrap()),
            vec![Message::state(json!(1)), Message::state(json!(2))]
        );

        // Never durable: nothing is echoed.
        let mut out = Output::new(Vec::new());
        load(Input::new(STREAM.as_bytes()), &mut out, |_| Ok(LoaderAction::Pending)).unwrap();
        assert!(out.into_inner().unwrap().is_empty());
    }

    #[test]
    fn loader_stops_on_invalid_input() {
        let mut out = Output::new(Vec::new());
        let e = load(Input::new("{\"type\":\"STATE\"}\n".as_bytes()), &mut out, |_| {
            Ok(LoaderAction::Durable)
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "line 1: STATE without \"value\"");
    }
}
