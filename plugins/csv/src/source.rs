//! The config, the files it names, and reading them: schemas (CSV header or inferred
//! from JSON lines) and rows as JSON objects.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flexcore_plugin_sdk::serde_json::{self, json, Map, Value};
use flexcore_plugin_sdk::{FailureKind, PluginError};
use serde::Deserialize;

use crate::csv_reader::CsvReader;

/// The plugin's config (see `config.schema.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A file, or a directory whose `.csv` / `.jsonl` / `.ndjson` files are read in name order.
    pub path: PathBuf,
    /// Stream name; defaults to each file's stem.
    #[serde(default)]
    pub stream: Option<String>,
    /// File format; defaults to each file's extension.
    #[serde(default)]
    pub format: Option<Format>,
    /// Column for incremental replication; without it every run reads everything.
    #[serde(default)]
    pub replication_key: Option<String>,
    /// Primary-key columns announced in SCHEMA.
    #[serde(default)]
    pub key_properties: Vec<String>,
}

/// A supported file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// One file to read.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Where it is.
    pub path: PathBuf,
    /// The stream its rows belong to.
    pub stream: String,
    /// How to parse it.
    pub format: Format,
}

/// The files `config.path` names, in a stable order.
pub fn files(config: &Config) -> Result<Vec<SourceFile>, PluginError> {
    let path = &config.path;
    // A missing file (66) or one outside the granted directories (77) fails the run at
    // once: another attempt would find the same.
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        // WASI reports a path outside every grant as missing too.
        std::io::ErrorKind::NotFound => PluginError::new(
            FailureKind::NoInput,
            format_args!(
                "{}: {e} (the plugin sees only its granted directories, by their guest paths)",
                path.display()
            ),
        ),
        _ => io_error(path, &e),
    })?;
    let candidates = if meta.is_dir() {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io_error(path, &e))? {
            let entry = entry.map_err(|e| io_error(path, &e))?;
            let p = entry.path();
            let wanted = Format::of(&p).is_some_and(|f| config.format.is_none_or(|c| c == f));
            if wanted && entry.file_type().map_err(|e| io_error(&p, &e))?.is_file() {
                paths.push(p);
            }
        }
        paths.sort();
        paths
    } else {
        vec![path.clone()]
    };
    candidates
        .into_iter()
        .map(|path| {
            let format = config.format.or_else(|| Format::of(&path)).ok_or_else(|| {
                PluginError::new(
                    FailureKind::Config,
                    format_args!("{}: unknown file type; set \"format\"", path.display()),
                )
            })?;
            let stream = match &config.stream {
                Some(stream) => stream.clone(),
                None => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            Ok(SourceFile { path, stream, format })
        })
        .collect()
}

/// The JSON Schema of a file's rows: string columns from a CSV header, or the JSON types
/// seen in a JSON-lines file (which takes a pass over the file).
pub fn schema(file: &SourceFile) -> Result<Value, PluginError> {
    let properties: Map<String, Value> = match file.format {
        Format::Csv => header(&mut CsvReader::new(open(&file.path)?), &file.path)?
            .into_iter()
            .map(|column| (column, json!({"type": "string"})))
            .collect(),
        Format::Jsonl => {
            let mut seen: BTreeMap<String, u8> = BTreeMap::new();
            jsonl_rows(file, |row| {
                for (key, value) in row {
                    *seen.entry(key).or_default() |= type_bit(&value);
                }
                Ok(())
            })?;
            seen.into_iter()
                .map(|(key, bits)| (key, json!({"type": type_names(bits)})))
                .collect()
        }
    };
    Ok(json!({"type": "object", "properties": properties}))
}

/// Calls `f` with each row of the file as a JSON object (CSV cells are strings; cells
/// missing at the end of a short row are left out).
pub fn rows(
    file: &SourceFile,
    mut f: impl FnMut(Map<String, Value>) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    match file.format {
        Format::Jsonl => jsonl_rows(file, f),
        Format::Csv => csv_rows(file, |columns, fields| {
            let row = columns
                .iter()
                .cloned()
                .zip(fields.iter().cloned().map(Value::String))
                .collect();
            f(row)
        }),
    }
}

/// Calls `f` with the header's columns and each row's fields (a short row has fewer
/// fields than columns; a longer one is an error), without building JSON objects.
pub fn csv_rows(
    file: &SourceFile,
    mut f: impl FnMut(&[String], &[String]) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    let mut reader = CsvReader::new(open(&file.path)?);
    let columns = header(&mut reader, &file.path)?;
    let mut fields = Vec::with_capacity(columns.len());
    while reader.next_record(&mut fields).map_err(|e| context(&file.path, e))? {
        if fields.len() > columns.len() {
            return Err(PluginError::new(
                FailureKind::Data,
                format_args!(
                    "{} line {}: {} fields but the header has {}",
                    file.path.display(),
                    reader.record_line(),
                    fields.len(),
                    columns.len()
                ),
            ));
        }
        f(&columns, &fields)?;
    }
    Ok(())
}

fn open(path: &Path) -> Result<BufReader<File>, PluginError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(64 * 1024, f))
        .map_err(|e| io_error(path, &e))
}

/// An I/O error on `path`, classified (a missing file is permanent, a failed read not).
fn io_error(path: &Path, e: &std::io::Error) -> PluginError {
    PluginError::io(path.display(), e)
}

/// `e` about `path`, keeping its kind.
fn context(path: &Path, e: PluginError) -> PluginError {
    PluginError::new(e.kind(), format_args!("{}: {e}", path.display()))
}

/// Malformed content in `path`: permanent until the file changes.
fn bad_data(path: &Path, what: impl std::fmt::Display) -> PluginError {
    PluginError::new(FailureKind::Data, format_args!("{}: {what}", path.display()))
}

fn header<R: BufRead>(reader: &mut CsvReader<R>, path: &Path) -> Result<Vec<String>, PluginError> {
    let mut columns = Vec::new();
    if !reader.next_record(&mut columns).map_err(|e| context(path, e))? {
        return Err(bad_data(path, "empty CSV file (no header row)"));
    }
    if let Some(first) = columns.first_mut() {
        // Spreadsheet exports often start with a UTF-8 byte-order mark.
        if let Some(stripped) = first.strip_prefix('\u{feff}') {
            *first = stripped.to_owned();
        }
    }
    for (i, column) in columns.iter_mut().enumerate() {
        if column.is_empty() {
            *column = format!("_col{}", i + 1);
        }
    }
    let mut sorted: Vec<&String> = columns.iter().collect();
    sorted.sort();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(bad_data(
            path,
            format_args!("duplicate column {:?} in the header", pair[0]),
        ));
    }
    Ok(columns)
}

fn jsonl_rows(
    file: &SourceFile,
    mut f: impl FnMut(Map<String, Value>) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    let mut reader = open(&file.path)?;
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| io_error(&file.path, &e))? == 0 {
            return Ok(());
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(Value::Object(row)) => f(row)?,
            Ok(_) => return Err(bad_data(&file.path, format_args!("line {number} is not a JSON object"))),
            Err(e) => return Err(bad_data(&file.path, format_args!("line {number} is not JSON: {e}"))),
        }
    }
}

const TYPES: [&str; 7] = ["null", "boolean", "integer", "number", "string", "object", "array"];

fn type_bit(value: &Value) -> u8 {
    let index = match value {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(n) if n.is_f64() => 3,
        Value::Number(_) => 2,
        Value::String(_) => 4,
        Value::Object(_) => 5,
        Value::Array(_) => 6,
    };
    1 << index
}

fn type_names(mut bits: u8) -> Value {
    // An integer column that also holds fractions is a number column.
    if bits & (1 << 3) != 0 {
        bits &= !(1 << 2);
    }
    let names: Vec<&str> = TYPES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, t)| *t)
        .collect();
    match names.as_slice() {
        [one] => json!(one),
        _ => json!(names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_jsonl_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "{\"a\":1,\"b\":\"x\"}\n\n{\"a\":1.5,\"b\":null,\"c\":[1]}\n").unwrap();
        let file = SourceFile {
            path,
            stream: "t".into(),
            format: Format::Jsonl,
        };
        assert_eq!(
            schema(&file).unwrap(),
            json!({"type": "object", "properties": {
                "a": {"type": "number"}, "b": {"type": ["null", "string"]}, "c": {"type": "array"}}})
        );
    }

    #[test]
    fn csv_header_problems_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "\u{feff}a,,a\n").unwrap();
        let file = SourceFile {
            path: path.clone(),
            stream: "t".into(),
            format: Format::Csv,
        };
        assert!(schema(&file)
            .unwrap_err()
            .to_string()
            .contains("duplicate column \"a\""));
        std::fs::write(&path, "a,b\n1,2,3\n").unwrap();
        assert!(rows(&file, |_| Ok(()))
            .unwrap_err()
            .to_string()
            .ends_with("line 2: 3 fields but the header has 2"));
    }
}
