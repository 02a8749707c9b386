//! Pipeline files: a pipeline (and its schedules) in YAML, with the position of every
//! value, so that an error found in the file or by the command service names its line.
//!
//! # Layout
//! - [`yaml`]: YAML to JSON values, remembering each value's line and column.
//! - [`pipeline_file`]: the file's shape ([`pipeline_file::PipelineFile`]), loading and
//!   checking it, and pointing refusals at their lines.

pub mod yaml;

#[path = "file.rs"]
pub mod pipeline_file;
