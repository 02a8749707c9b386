//! Pipeline event payloads.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::opaque::OpaqueJson;
use uuid::Uuid;

use crate::model::PipelineDefinition;
use crate::values::{Label, PipelineName};

/// A pipeline was created (definition version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineCreated {
    /// Id.
    pub pipeline_id: Uuid,
    /// Unique name.
    pub name: PipelineName,
    /// Owner.
    pub owner: Label,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Label>,
    /// The definition.
    pub definition: PipelineDefinition,
}

/// The pipeline's definition and/or metadata changed. `definition_version` grows when the
/// definition changed; every version stays in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineUpdated {
    /// Definition version after the update.
    pub definition_version: u32,
    /// The full definition after the update.
    pub definition: PipelineDefinition,
    /// Owner after the update.
    pub owner: Label,
    /// Description after the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags after the update.
    #[serde(default)]
    pub tags: Vec<Label>,
}

/// The pipeline was paused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelinePaused {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The pipeline was resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineResumed {}

/// The pipeline was archived; its name is free again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineArchived {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A new Singer bookmark was committed (by a run's checkpoint or by hand).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineStateCommitted {
    /// The STATE `value`, or `null` after a reset.
    pub state: OpaqueJson,
    /// The run whose loader echoed it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
}
