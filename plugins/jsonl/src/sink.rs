//! Writing records to files, and making them durable at each STATE.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use flexcore_plugin_sdk::{metric_counter, LoaderAction, PluginError, RawLoaderEvent, RawRecord};
use serde::Deserialize;

/// The plugin's config (see `config.schema.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Output directory (inside a granted directory); created if missing.
    pub directory: PathBuf,
    /// One `<stream>.jsonl` file of bare records per stream; otherwise one
    /// `records.jsonl` of whole RECORD messages.
    #[serde(default = "yes")]
    pub file_per_stream: bool,
    /// Append to existing files; otherwise each file is truncated when first opened in a run.
    #[serde(default = "yes")]
    pub append: bool,
}

fn yes() -> bool {
    true
}

/// File name for all streams when `file_per_stream` is off.
const SHARED_FILE: &str = "records.jsonl";

/// An open output file.
struct Target {
    writer: BufWriter<File>,
    records: u64,
}

/// The loader: open files by name, and whether anything is not yet durable.
pub struct Sink {
    config: Config,
    files: BTreeMap<String, Target>,
    /// Records written since the last fsync.
    dirty: bool,
    /// A file was created since the last directory fsync.
    created: bool,
}

impl Sink {
    /// Checks the config and creates the directory.
    pub fn new(config: Config) -> Result<Sink, PluginError> {
        std::fs::create_dir_all(&config.directory)
            .map_err(|e| PluginError::io(format_args!("cannot create {}", config.directory.display()), &e))?;
        Ok(Sink {
            config,
            files: BTreeMap::new(),
            dirty: false,
            created: false,
        })
    }

    /// Handles one loader event.
    pub fn handle(&mut self, event: RawLoaderEvent<'_>) -> Result<LoaderAction, PluginError> {
        match event {
            RawLoaderEvent::Record(record) => {
                self.write(&record)?;
                Ok(LoaderAction::Pending)
            }
            RawLoaderEvent::Message(_) => Ok(LoaderAction::Pending),
            RawLoaderEvent::State(_) => {
                self.make_durable()?;
                Ok(LoaderAction::Durable)
            }
            RawLoaderEvent::End => {
                self.make_durable()?;
                for (name, target) in &self.files {
                    metric_counter("record_count", target.records, &[("file", name)]);
                }
                Ok(LoaderAction::Durable)
            }
        }
    }

    /// Appends the record (or, with one shared file, the whole RECORD message) as the
    /// JSON text it arrived as.
    fn write(&mut self, record: &RawRecord<'_>) -> Result<(), PluginError> {
        let name = if self.config.file_per_stream {
            file_name(&record.stream)
        } else {
            SHARED_FILE.to_owned()
        };
        if !self.files.contains_key(&name) {
            let target = self.open(&name)?;
            self.files.insert(name.clone(), target);
        }
        let Some(target) = self.files.get_mut(&name) else {
            return Ok(());
        };
        if self.config.file_per_stream {
            target.writer.write_all(record.record.get().as_bytes())?;
        } else {
            record.write_to(&mut target.writer)?;
        }
        target.writer.write_all(b"\n")?;
        target.records += 1;
        self.dirty = true;
        Ok(())
    }

    fn open(&mut self, name: &str) -> Result<Target, PluginError> {
        let path = self.config.directory.join(name);
        self.created |= !path.exists();
        let mut options = OpenOptions::new();
        options.create(true);
        if self.config.append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        let file = options.open(&path).map_err(|e| PluginError::io(path.display(), &e))?;
        Ok(Target {
            writer: BufWriter::with_capacity(64 * 1024, file),
            records: 0,
        })
    }

    /// Flushes and fsyncs every file written since the last call.
    fn make_durable(&mut self) -> Result<(), PluginError> {
        if !self.dirty {
            return Ok(());
        }
        for target in self.files.values_mut() {
            target.writer.flush()?;
            ignore_unsupported(target.writer.get_ref().sync_all())?;
        }
        if self.created {
            // A new file's directory entry is durable only once the directory is synced;
            // not every platform (or WASI host) can open a directory, so this is best effort.
            if let Ok(dir) = File::open(&self.config.directory) {
                let _ = dir.sync_all();
            }
            self.created = false;
        }
        self.dirty = false;
        Ok(())
    }
}

fn ignore_unsupported(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(()),
        other => other,
    }
}

/// A file name for `stream`: characters outside `[A-Za-z0-9_.-]` become `_`, and a
/// leading dot is prefixed, so a stream name can never leave the directory.
pub fn file_name(stream: &str) -> String {
    let mut name: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    name.push_str(".jsonl");
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_stay_inside_the_directory() {
        assert_eq!(file_name("users"), "users.jsonl");
        assert_eq!(file_name("public.users"), "public.users.jsonl");
        assert_eq!(file_name("../etc/passwd"), "_.._etc_passwd.jsonl");
        assert_eq!(file_name(""), "_.jsonl");
    }
}
