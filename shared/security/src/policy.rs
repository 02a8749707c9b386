//! Which role may send which command: the command service checks every command against
//! the role of its verified sender before deciding it.
//!
//! | role | commands |
//! |---|---|
//! | client | `pipeline.*` but `commit_state`; `run.request` without a schedule; `run.cancel`; `schedule.create/update/pause/resume/delete`; `plugin.register` of a `wasm` plugin without grants |
//! | admin | everything a client may, and `plugin.register` with grants or `runtime: process`, `plugin.deprecate/disable/enable`, `pipeline.commit_state`, `run.request` for a schedule's slot (`trigger: backfill`) and `schedule.skip_slot` (`flexctl schedule backfill`) |
//! | runner | `run.claim/checkpoint/succeed/fail/time_out` |
//! | scheduler | `run.request` (of a schedule's slot or not; the only role that may send `trigger: schedule`), `run.retry`, `run.time_out`, `schedule.skip_slot/miss_slots` |
//! | command, projection, setup | none |
//! | gateway | only on behalf of a caller (`Flexcore-On-Behalf-Of`, signed), as that caller's [`ApiRole`]: |
//! | … viewer | none |
//! | … operator | `run.request` (a schedule's slot too: backfill), `run.cancel`, `pipeline.pause/resume`, `schedule.pause/resume/skip_slot` |
//! | … admin | what role admin may |

use flexcore_contracts::commands::Command;
use flexcore_contracts::model::{PluginRuntime, RunTrigger};

use crate::{ApiRole, Role};

/// Whether `role` may send `command`; the refusal says why (for an `unauthorized` reply).
pub fn authorize(role: Role, command: &Command) -> Result<(), String> {
    if allowed(role, command) {
        return Ok(());
    }
    Err(match command {
        Command::RequestRun(_) if schedulers(command) => format!(
            "{} with trigger schedule is sent by schedulers only: request the run with trigger manual, api or backfill (sender has role {role})",
            command.name()
        ),
        Command::RegisterPlugin(_) if role == Role::Client => format!(
            "{} of a plugin with grants or runtime process needs role admin (sender has role client)",
            command.name()
        ),
        Command::RequestRun(_) if role == Role::Client => format!(
            "{} for a schedule's slot is sent by schedulers and operators (backfill) only (sender has role client)",
            command.name()
        ),
        _ => format!(
            "{} may not be sent by role {role} (roles that may: {})",
            command.name(),
            Role::ALL
                .into_iter()
                .filter(|r| allowed(*r, command))
                .map(Role::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Whether a caller of the HTTP API with `role` may have the gateway send `command` on
/// its behalf; the refusal says why.
pub fn authorize_api(role: ApiRole, command: &Command) -> Result<(), String> {
    let allowed = match role {
        ApiRole::Viewer => false,
        ApiRole::Operator => {
            !schedulers(command)
                && matches!(
                    command,
                    Command::RequestRun(_)
                        | Command::CancelRun(_)
                        | Command::PausePipeline(_)
                        | Command::ResumePipeline(_)
                        | Command::PauseSchedule(_)
                        | Command::ResumeSchedule(_)
                        | Command::SkipSlot(_)
                )
        }
        ApiRole::Admin => allowed(Role::Admin, command),
    };
    if allowed {
        return Ok(());
    }
    if schedulers(command) {
        return Err(format!(
            "{} with trigger schedule is sent by schedulers only: request the run with trigger api or backfill",
            command.name()
        ));
    }
    let may: Vec<&str> = ApiRole::ALL
        .into_iter()
        .filter(|r| *r > role && authorize_api(*r, command).is_ok())
        .map(ApiRole::as_str)
        .collect();
    Err(if may.is_empty() {
        format!(
            "{} is not sent through the HTTP API (caller has role {role})",
            command.name()
        )
    } else {
        format!(
            "{} needs API role {} (caller has role {role})",
            command.name(),
            may.join(" or ")
        )
    })
}

fn allowed(role: Role, command: &Command) -> bool {
    match role {
        Role::Client => client_may(command),
        Role::Admin => client_may(command) || admin_only(command),
        Role::Runner => matches!(
            command,
            Command::ClaimRun(_)
                | Command::CheckpointRun(_)
                | Command::SucceedRun(_)
                | Command::FailRun(_)
                | Command::TimeOutRun(_)
        ),
        Role::Scheduler => matches!(
            command,
            Command::RequestRun(_)
                | Command::RetryRun(_)
                | Command::TimeOutRun(_)
                | Command::SkipSlot(_)
                | Command::MissSlots(_)
        ),
        // The gateway sends only on behalf of a caller: [`authorize_api`].
        Role::Command | Role::Projection | Role::Setup | Role::Gateway => false,
    }
}

/// Commands an application may send.
fn client_may(command: &Command) -> bool {
    match command {
        Command::RegisterPlugin(register) => {
            register.runtime == PluginRuntime::Wasm
                && register.grants.allowed_hosts.is_empty()
                && register.grants.env.is_empty()
                && register.grants.dirs.is_empty()
        }
        Command::CreatePipeline(_)
        | Command::UpdatePipeline(_)
        | Command::PausePipeline(_)
        | Command::ResumePipeline(_)
        | Command::ArchivePipeline(_)
        | Command::CancelRun(_)
        | Command::CreateSchedule(_)
        | Command::UpdateSchedule(_)
        | Command::PauseSchedule(_)
        | Command::ResumeSchedule(_)
        | Command::DeleteSchedule(_) => true,
        Command::RequestRun(request) => {
            request.schedule_id.is_none() && request.scheduled_for.is_none() && !schedulers(command)
        }
        _ => false,
    }
}

/// A run with `trigger: schedule`: only schedulers fire slots (others request runs as
/// `manual`, `api` or `backfill`), so the trigger tells where a run came from.
fn schedulers(command: &Command) -> bool {
    matches!(command, Command::RequestRun(r) if r.trigger == RunTrigger::Schedule)
}

/// Commands only operators send.
fn admin_only(command: &Command) -> bool {
    !schedulers(command)
        && matches!(
            command,
            Command::RequestRun(_)
                | Command::SkipSlot(_)
                | Command::RegisterPlugin(_)
                | Command::DeprecatePlugin(_)
                | Command::DisablePlugin(_)
                | Command::EnablePlugin(_)
                | Command::CommitPipelineState(_)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexcore_contracts::commands::decode;
    use flexcore_contracts::subjects;

    #[test]
    fn only_schedulers_request_runs_with_trigger_schedule() {
        let run = |trigger: &str| {
            command(
                "run.request",
                &format!(
                    r#"{{"pipeline_id":"00000000-0000-0000-0000-000000000001","trigger":"{trigger}","schedule_id":"00000000-0000-0000-0000-000000000002","scheduled_for":"2026-01-01T00:00:00Z"}}"#
                ),
            )
        };
        assert!(authorize(Role::Scheduler, &run("schedule")).is_ok());
        assert!(authorize(Role::Admin, &run("schedule")).is_err());
        assert!(authorize(Role::Admin, &run("backfill")).is_ok());
        for role in ApiRole::ALL {
            let refusal = authorize_api(role, &run("schedule")).unwrap_err();
            assert!(refusal.contains("schedulers only"), "{refusal}");
        }
        assert!(authorize_api(ApiRole::Operator, &run("backfill")).is_ok());
    }

    fn command(name: &str, body: &str) -> Command {
        let (aggregate, action) = name.split_once('.').unwrap();
        decode(&subjects::command(aggregate, action), body.as_bytes())
            .unwrap()
            .1
    }

    #[test]
    fn runner_and_scheduler_commands_only_from_their_roles() {
        let claim = command(
            "run.claim",
            r#"{"run_id":"0190a000-0000-7000-8000-000000000001","attempt":1,"runner_id":"r1"}"#,
        );
        assert!(authorize(Role::Runner, &claim).is_ok());
        for role in [
            Role::Client,
            Role::Admin,
            Role::Scheduler,
            Role::Command,
            Role::Projection,
        ] {
            let refusal = authorize(role, &claim).unwrap_err();
            assert!(refusal.contains("run.claim may not be sent by role"), "{refusal}");
            assert!(refusal.ends_with("(roles that may: runner)"), "{refusal}");
        }
        let retry = command(
            "run.retry",
            r#"{"run_id":"0190a000-0000-7000-8000-000000000001","failed_attempt":1}"#,
        );
        assert!(authorize(Role::Scheduler, &retry).is_ok());
        assert!(authorize(Role::Runner, &retry).is_err());
        assert!(authorize(Role::Admin, &retry).is_err());
        let time_out = command(
            "run.time_out",
            r#"{"run_id":"0190a000-0000-7000-8000-000000000001","attempt":1,"reason":"lease_expired"}"#,
        );
        assert!(authorize(Role::Scheduler, &time_out).is_ok());
        assert!(authorize(Role::Runner, &time_out).is_ok());
        assert!(authorize(Role::Client, &time_out).is_err());
    }

    #[test]
    fn grants_and_the_process_runtime_need_admin() {
        let digest = "0".repeat(64);
        let plain = command(
            "plugin.register",
            &format!(r#"{{"name":"csv","version":"1.0.0","kind":"extractor","module_digest":"sha256:{digest}"}}"#),
        );
        assert!(authorize(Role::Client, &plain).is_ok());
        assert!(authorize(Role::Admin, &plain).is_ok());
        assert!(authorize(Role::Runner, &plain).is_err());
        let granted = command(
            "plugin.register",
            &format!(
                r#"{{"name":"csv","version":"1.0.0","kind":"extractor","module_digest":"sha256:{digest}","grants":{{"env":["HOME"]}}}}"#
            ),
        );
        let process = command(
            "plugin.register",
            r#"{"name":"csv","version":"1.0.0","kind":"extractor","runtime":"process","executable":"/bin/sh"}"#,
        );
        for privileged in [&granted, &process] {
            assert!(authorize(Role::Admin, privileged).is_ok());
            let refusal = authorize(Role::Client, privileged).unwrap_err();
            assert!(refusal.contains("needs role admin"), "{refusal}");
        }
        let disable = command(
            "plugin.disable",
            r#"{"plugin_id":"0190a000-0000-7000-8000-000000000001"}"#,
        );
        assert!(authorize(Role::Admin, &disable).is_ok());
        assert!(authorize(Role::Client, &disable).is_err());
    }

    #[test]
    fn only_schedulers_and_operators_request_runs_for_a_slot() {
        let api = command(
            "run.request",
            r#"{"pipeline_id":"0190a000-0000-7000-8000-000000000001"}"#,
        );
        let slot = command(
            "run.request",
            r#"{"pipeline_id":"0190a000-0000-7000-8000-000000000001","trigger":"schedule","schedule_id":"0190a000-0000-7000-8000-000000000002","scheduled_for":"2026-12-04T10:00:00Z"}"#,
        );
        let backfill = command(
            "run.request",
            r#"{"pipeline_id":"0190a000-0000-7000-8000-000000000001","trigger":"backfill","schedule_id":"0190a000-0000-7000-8000-000000000002","scheduled_for":"2026-12-04T10:00:00Z"}"#,
        );
        assert!(authorize(Role::Client, &api).is_ok());
        assert!(authorize(Role::Scheduler, &api).is_ok());
        assert!(authorize(Role::Scheduler, &slot).is_ok());
        // Operators backfill slots.
        assert!(authorize(Role::Admin, &backfill).is_ok());
        let refusal = authorize(Role::Client, &backfill).unwrap_err();
        assert!(refusal.contains("sent by schedulers and operators"), "{refusal}");
        let refusal = authorize(Role::Client, &slot).unwrap_err();
        assert!(refusal.contains("schedulers only"), "{refusal}");
        assert!(authorize(Role::Runner, &api).is_err());
    }

    #[test]
    fn the_services_send_no_commands_of_their_own() {
        let create = command(
            "pipeline.create",
            r#"{"name":"p","owner":"team","steps":[{"plugin":"csv@1.0.0"},{"plugin":"jsonl@1.0.0"}]}"#,
        );
        assert!(authorize(Role::Client, &create).is_ok());
        assert!(authorize(Role::Command, &create).is_err());
        assert!(authorize(Role::Projection, &create).is_err());
    }

    #[test]
    fn api_roles_grow_from_reading_to_running_to_administering() {
        let id = "0190a000-0000-7000-8000-000000000001";
        let request = command("run.request", &format!(r#"{{"pipeline_id":"{id}"}}"#));
        let pause = command("pipeline.pause", &format!(r#"{{"pipeline_id":"{id}"}}"#));
        let archive = command("pipeline.archive", &format!(r#"{{"pipeline_id":"{id}"}}"#));
        let claim = command(
            "run.claim",
            &format!(r#"{{"run_id":"{id}","attempt":1,"runner_id":"r"}}"#),
        );
        for c in [&request, &pause, &archive] {
            let refusal = authorize_api(ApiRole::Viewer, c).unwrap_err();
            assert!(refusal.contains("(caller has role viewer)"), "{refusal}");
        }
        assert!(authorize_api(ApiRole::Operator, &request).is_ok());
        assert!(authorize_api(ApiRole::Operator, &pause).is_ok());
        assert_eq!(
            authorize_api(ApiRole::Operator, &archive).unwrap_err(),
            "pipeline.archive needs API role admin (caller has role operator)"
        );
        assert!(authorize_api(ApiRole::Admin, &archive).is_ok());
        assert_eq!(
            authorize_api(ApiRole::Admin, &claim).unwrap_err(),
            "run.claim is not sent through the HTTP API (caller has role admin)"
        );
        assert!(authorize(Role::Gateway, &request).is_err(), "never in its own name");
    }
}
