//! The Pipeline aggregate: a named, owned chain of plugin steps with its run policies, its
//! definition versions and the Singer bookmark the next run resumes from.

use flexcore_contracts::commands::{
    ArchivePipeline, CommitPipelineState, CreatePipeline, PausePipeline, ResumePipeline, UpdatePipeline,
};
use flexcore_contracts::events::{
    PipelineArchived, PipelineCreated, PipelineEvent, PipelinePaused, PipelineResumed, PipelineStateCommitted,
    PipelineUpdated,
};
use flexcore_contracts::model::{PinnedStep, PipelineDefinition, PluginKind, StepSpec};
use flexcore_contracts::values::{Label, PipelineName};
use flexcore_contracts::{ErrorReason, OpaqueJson};
use uuid::Uuid;

use super::plugin::PluginStatus;
use super::{validation, AggRef, Aggregate, Constraints, Decision, DomainError, Loaded, UniqueKey};

/// Scope of the unique pipeline names in the store.
pub const NAME_SCOPE: &str = "pipeline_name";

pub use flexcore_contracts::lifecycle::PipelineStatus;

/// A pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Id.
    pub id: Uuid,
    /// Unique name among non-archived pipelines.
    pub name: PipelineName,
    /// Owning person or team.
    pub owner: Label,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<Label>,
    /// Lifecycle state.
    pub status: PipelineStatus,
    /// The current definition (steps pinned to plugin ids and digests, policies).
    pub definition: PipelineDefinition,
    /// Version of `definition`: 1 at creation, +1 on every definition change.
    pub definition_version: u32,
    /// Latest committed Singer STATE (`null` until the first commit or after a reset),
    /// exactly as the loader echoed it.
    pub bookmark: OpaqueJson,
}

impl Aggregate for Pipeline {
    fn create(event: &PipelineEvent) -> Result<Self, DomainError> {
        let (Some(status), PipelineEvent::Created(e)) = (PipelineStatus::initial(event), event) else {
            return Err(DomainError::Corrupt(format!(
                "the first pipeline event must be pipeline.created, not {}",
                event.event_type()
            )));
        };
        Ok(Self {
            id: e.pipeline_id,
            name: e.name.clone(),
            owner: e.owner.clone(),
            description: e.description.clone(),
            tags: e.tags.clone(),
            status,
            definition: e.definition.clone(),
            definition_version: 1,
            bookmark: OpaqueJson::null(),
        })
    }

    fn apply(&mut self, event: &PipelineEvent) -> Result<(), DomainError> {
        match event {
            PipelineEvent::Created(_) => {
                return Err(DomainError::Corrupt(format!("pipeline {} is created twice", self.id)))
            }
            PipelineEvent::Updated(e) => {
                self.definition_version = e.definition_version;
                self.definition = e.definition.clone();
                self.owner = e.owner.clone();
                self.description = e.description.clone();
                self.tags = e.tags.clone();
            }
            PipelineEvent::Paused(_) | PipelineEvent::Resumed(_) | PipelineEvent::Archived(_) => {}
            PipelineEvent::StateCommitted(e) => self.bookmark = e.state.clone(),
        }
        self.status = self.status.after(event);
        Ok(())
    }
}

impl Pipeline {
    fn name_key(&self) -> UniqueKey {
        UniqueKey {
            scope: NAME_SCOPE.to_owned(),
            key: self.name.to_string(),
            owner: self.id,
        }
    }
}

fn load(id: Uuid, loaded: &Loaded) -> Result<&Pipeline, DomainError> {
    loaded
        .pipeline(id)
        .ok_or_else(|| DomainError::NotFound(format!("pipeline {id} does not exist")))
}

fn not_archived(p: &Pipeline, action: &str) -> Result<(), DomainError> {
    if p.status == PipelineStatus::Archived {
        return Err(DomainError::InvalidState(format!(
            "pipeline {} is archived: it cannot be {action}; create a new pipeline",
            p.name
        )));
    }
    Ok(())
}

/// Resolves and checks the steps (2 to 32 of them, by the schema): every plugin registered
/// and not disabled; an extractor first, a loader last, transformers in between; every
/// config valid. The result pins plugin id, kind, runtime and digest so later runs execute
/// exactly these.
fn pin_steps(steps: &[StepSpec], loaded: &Loaded) -> Result<Vec<PinnedStep>, DomainError> {
    let last = steps.len().saturating_sub(1);
    let mut pinned = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let reference = step.plugin.as_str();
        let plugin = loaded
            .plugin(step.plugin.plugin_id())
            .ok_or_else(|| DomainError::NotFoundAt {
                path: format!("/steps/{i}/plugin"),
                message: format!(
                    "step {i}: plugin {reference} is not registered; register it first: \
                     `flexctl plugin register FILE --name NAME --version VERSION --kind KIND` \
                     or POST /api/v1/flexcore/plugins"
                ),
            })?;
        if plugin.status == PluginStatus::Disabled {
            return Err(DomainError::validation(
                ErrorReason::PluginDisabled,
                format!("/steps/{i}/plugin"),
                format!("step {i}: plugin {reference} is disabled; enable it or use another version"),
            ));
        }
        let expected = match i {
            0 => PluginKind::Extractor,
            i if i == last => PluginKind::Loader,
            _ => PluginKind::Transformer,
        };
        if plugin.kind != expected {
            return Err(DomainError::validation(
                ErrorReason::WrongPluginKind,
                format!("/steps/{i}/plugin"),
                format!(
                    "step {i}: plugin {reference} is a {} but step {i} must be a {}: a pipeline is one extractor, zero or more transformers and one loader, in that order",
                    plugin.kind.as_str(),
                    expected.as_str()
                ),
            )
            .with("expected", expected.as_str())
            .with("actual", plugin.kind.as_str()));
        }
        validation::check_step_config(i, reference, plugin.config_schema.as_ref(), &step.config.to_map())?;
        pinned.push(PinnedStep {
            plugin: step.plugin.clone(),
            plugin_id: plugin.id,
            kind: plugin.kind,
            runtime: plugin.runtime,
            module_digest: plugin.module_digest.clone(),
            config: step.config.clone(),
        });
    }
    Ok(pinned)
}

/// A secret reference is resolved only inside a step's config values: anywhere else it
/// would be recorded and shown as written, which is never what its author meant.
fn check_no_secret_references(
    owner: Option<&Label>,
    description: Option<&str>,
    tags: Option<&[Label]>,
) -> Result<(), DomainError> {
    if let Some(owner) = owner {
        validation::check_no_secret_reference("/owner", "owner", owner.as_str())?;
    }
    if let Some(description) = description {
        validation::check_no_secret_reference("/description", "description", description)?;
    }
    for (i, tag) in tags.into_iter().flatten().enumerate() {
        validation::check_no_secret_reference(&format!("/tags/{i}"), &format!("tags[{i}]"), tag.as_str())?;
    }
    Ok(())
}

/// `pipeline.create`: claims the name in the store so two pipelines never share one.
pub(crate) fn create(id: Uuid, c: &CreatePipeline, loaded: &Loaded) -> Result<Decision, DomainError> {
    if let Some(p) = loaded.pipeline(id) {
        return Err(DomainError::conflict(
            ErrorReason::Exists,
            format!(
                "pipeline {id} already exists (named {}); omit pipeline_id to create a new one",
                p.name
            ),
        )
        .with("pipeline_id", id.to_string()));
    }
    check_no_secret_references(Some(&c.owner), c.description.as_deref(), Some(&c.tags))?;
    let steps = pin_steps(&c.steps, loaded)?;
    let definition = PipelineDefinition {
        steps,
        max_active_runs: c.max_active_runs,
        retry: c.retry.clone(),
        run_timeout_seconds: c.run_timeout_seconds,
    };
    let event = PipelineCreated {
        pipeline_id: id,
        name: c.name.clone(),
        owner: c.owner.clone(),
        description: c.description.clone(),
        tags: c.tags.clone(),
        definition,
    };
    let claim = UniqueKey {
        scope: NAME_SCOPE.to_owned(),
        key: c.name.to_string(),
        owner: id,
    };
    Ok(Decision::one(AggRef::pipeline(id), event).with(Constraints {
        claim_unique: vec![claim],
        ..Constraints::default()
    }))
}

/// `pipeline.update`: absent fields keep their value; a changed definition gets the next
/// definition version, a metadata-only change keeps it.
pub(crate) fn update(c: &UpdatePipeline, loaded: &Loaded) -> Result<Decision, DomainError> {
    let p = load(c.pipeline_id, loaded)?;
    not_archived(p, "updated")?;
    check_no_secret_references(c.owner.as_ref(), c.description.as_deref(), c.tags.as_deref())?;
    // At least one field is given (the schema's rule).
    let tags = c.tags.clone().unwrap_or_else(|| p.tags.clone());
    let old = &p.definition;
    let max_active_runs = c.max_active_runs.unwrap_or(old.max_active_runs);
    let retry = c.retry.clone().unwrap_or_else(|| old.retry.clone());
    let run_timeout_seconds = c.run_timeout_seconds.unwrap_or(old.run_timeout_seconds);
    // Unchanged steps stay pinned as they were: re-resolving them could only fail on a
    // plugin disabled since, which should not block an unrelated metadata change.
    let steps = match &c.steps {
        Some(steps) => pin_steps(steps, loaded)?,
        None => old.steps.clone(),
    };
    let definition = PipelineDefinition {
        steps,
        max_active_runs,
        retry,
        run_timeout_seconds,
    };
    let definition_version = if definition == *old {
        p.definition_version
    } else {
        p.definition_version + 1
    };
    let event = PipelineUpdated {
        definition_version,
        definition,
        owner: c.owner.clone().unwrap_or_else(|| p.owner.clone()),
        description: c.description.clone().or_else(|| p.description.clone()),
        tags,
    };
    Ok(Decision::one(AggRef::pipeline(p.id), event))
}

/// `pipeline.pause`: only an active pipeline.
pub(crate) fn pause(c: &PausePipeline, loaded: &Loaded) -> Result<Decision, DomainError> {
    let p = load(c.pipeline_id, loaded)?;
    not_archived(p, "paused")?;
    if p.status != PipelineStatus::Active {
        return Err(DomainError::InvalidState(format!(
            "pipeline {name} is already paused; resume it: `flexctl pipeline resume {name}` \
             or POST /api/v1/flexcore/pipelines/{id}/resume",
            name = p.name,
            id = p.id
        )));
    }
    Ok(Decision::one(
        AggRef::pipeline(p.id),
        PipelinePaused {
            reason: c.reason.clone(),
        },
    ))
}

/// `pipeline.resume`: only a paused pipeline.
pub(crate) fn resume(c: &ResumePipeline, loaded: &Loaded) -> Result<Decision, DomainError> {
    let p = load(c.pipeline_id, loaded)?;
    not_archived(p, "resumed")?;
    if p.status != PipelineStatus::Paused {
        return Err(DomainError::InvalidState(format!(
            "pipeline {} is active, not paused: there is nothing to resume",
            p.name
        )));
    }
    Ok(Decision::one(AggRef::pipeline(p.id), PipelineResumed {}))
}

/// `pipeline.archive`: final; releases the name so a new pipeline may take it.
pub(crate) fn archive(c: &ArchivePipeline, loaded: &Loaded) -> Result<Decision, DomainError> {
    let p = load(c.pipeline_id, loaded)?;
    if p.status == PipelineStatus::Archived {
        return Err(DomainError::InvalidState(format!(
            "pipeline {} is already archived",
            p.name
        )));
    }
    let release = Constraints {
        release_unique: vec![p.name_key()],
        ..Constraints::default()
    };
    Ok(Decision::one(
        AggRef::pipeline(p.id),
        PipelineArchived {
            reason: c.reason.clone(),
        },
    )
    .with(release))
}

/// `pipeline.commit_state`: sets (or with `null` resets) the bookmark by hand.
pub(crate) fn commit_state(c: &CommitPipelineState, loaded: &Loaded) -> Result<Decision, DomainError> {
    let p = load(c.pipeline_id, loaded)?;
    not_archived(p, "given a new state")?;
    Ok(Decision::one(
        AggRef::pipeline(p.id),
        PipelineStateCommitted {
            state: c.state.clone(),
            run_id: None,
        },
    ))
}
