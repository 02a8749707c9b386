//! Shell completion of names and ids: `flexctl completions bash|fish` adds to clap's
//! script a function that, where a pipeline, run, schedule or plugin is expected, asks
//! the hidden `flexctl __complete KIND [PREFIX]`, which prints the candidates from the live
//! read models, one a line (pipeline names, plugin `name@version`s, the newest runs' and
//! schedules' short ids). It connects as flexctl does from the environment
//! (`FLEXCORE__NATS__URL`, `FLEXCORE__NATS__NKEY_SEED_FILE`, …) and prints nothing when
//! no FlexCore answers, so completion never hangs on an error message.

use clap::{Args, ValueEnum};
use clap_complete::Shell;
use serde_json::{json, Value};

use crate::api::{id_prefix, Api};
use crate::nats::Nats;

/// Most candidates offered.
const MAX: usize = 200;

/// What to complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Pipeline names.
    Pipelines,
    /// Run ids (the newest first).
    Runs,
    /// Schedule ids.
    Schedules,
    /// Plugins as name@version.
    Plugins,
}

/// `flexctl __complete KIND [PREFIX]`.
#[derive(Debug, Clone, Args)]
pub struct CompleteArgs {
    /// What to complete.
    #[arg(value_enum)]
    pub kind: Kind,
    /// What has been typed so far.
    #[arg(default_value = "")]
    pub prefix: String,
}

/// Prints the candidates; errors (no NATS, no projection service) print nothing.
pub async fn run(nats: &Nats, args: &CompleteArgs) -> anyhow::Result<()> {
    let found = match nats.api().await {
        Ok(api) => candidates(&api, args.kind, &args.prefix).await,
        Err(error) => Err(error),
    };
    match found {
        Ok(words) if !words.is_empty() => crate::write_stdout(&words.join("\n")),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::debug!(%error, "no completions");
            Ok(())
        }
    }
}

/// The words starting with `prefix` that name an item of `kind`.
pub async fn candidates(api: &Api, kind: Kind, prefix: &str) -> anyhow::Result<Vec<String>> {
    let limit = MAX;
    let (view, mut filter) = match kind {
        Kind::Pipelines => ("pipeline", json!({"sort_by": "name", "order": "asc"})),
        Kind::Plugins => ("plugin", json!({"sort_by": "name", "order": "asc"})),
        Kind::Runs => ("run", json!({"sort_by": "time", "order": "desc"})),
        Kind::Schedules => ("schedule", json!({"sort_by": "time", "order": "desc"})),
    };
    filter["limit"] = json!(limit);
    match kind {
        Kind::Pipelines | Kind::Plugins => {
            // Names may not hold `*`: the typed text is a name prefix.
            let name = prefix.split('@').next().unwrap_or_default();
            if !name.is_empty() && !name.contains('*') {
                filter["name"] = json!(format!("{name}*"));
            }
        }
        Kind::Runs | Kind::Schedules => match id_prefix(prefix) {
            Some(hex) => filter["id_prefix"] = json!(hex),
            None if prefix.is_empty() => {}
            None => return Ok(Vec::new()),
        },
    }
    let items: Vec<Value> = api.query(&format!("{view}.list"), &filter).await?;
    let mut words: Vec<String> = match kind {
        Kind::Pipelines => items
            .iter()
            .filter(|p| p["state"] != json!("archived"))
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect(),
        Kind::Plugins => items
            .iter()
            .filter_map(|p| Some(format!("{}@{}", p["name"].as_str()?, p["version"].as_str()?)))
            .collect(),
        Kind::Runs | Kind::Schedules => {
            let field = format!("{view}_id");
            let ids: Vec<uuid::Uuid> = items
                .iter()
                .filter_map(|item| item[&field].as_str()?.parse().ok())
                .collect();
            crate::table::short_ids(&ids)
        }
    };
    words.retain(|w| w.starts_with(prefix) || w.replace('-', "").starts_with(&prefix.replace('-', "")));
    words.dedup();
    Ok(words)
}

/// What `completions SHELL` adds to clap's script for names and ids (bash and fish; the
/// other shells complete commands and options only).
pub fn dynamic(shell: Shell) -> &'static str {
    match shell {
        Shell::Bash => BASH,
        Shell::Fish => FISH,
        _ => "",
    }
}

/// Wraps clap's `_flexctl`: the first two words that are not options (nor an option's
/// value) are the command, and the word after them is the item it takes.
const BASH: &str = r#"
# Names and ids from the live FlexCore (flexctl __complete).
_flexctl_items() {
    local i=1 words=() word kind="" prev="${COMP_WORDS[COMP_CWORD-1]}" cur="${COMP_WORDS[COMP_CWORD]}"
    while [[ $i -lt $COMP_CWORD ]]; do
        word="${COMP_WORDS[i]}"
        case "$word" in
            --nats-url|--nats-user|--nats-password|--nkey-seed-file|--identities-file|--tls-ca-file|--tls-cert-file|--tls-key-file|--otlp-endpoint|--output|--reason|--state|--limit|--timeout|--name|--tag|--kind|--cron|--timezone|--from|--to|--overlap|-f|--file) i=$((i + 1)) ;;
            -*) ;;
            *) words+=("$word") ;;
        esac
        i=$((i + 1))
    done
    case "$prev" in
        --pipeline) kind=pipelines ;;
        --aggregate) kind=runs ;;
        *) if [[ ${#words[@]} -eq 2 && "$prev" != -* ]]; then
               case "${words[0]} ${words[1]}" in
                   "run show"|"run cancel"|"run logs") kind=runs ;;
                   "run start"|"pipeline show"|"pipeline update"|"pipeline pause"|"pipeline resume"|"pipeline archive"|"pipeline delete") kind=pipelines ;;
                   "schedule show"|"schedule update"|"schedule pause"|"schedule resume"|"schedule delete"|"schedule backfill") kind=schedules ;;
                   "plugin show"|"plugin deprecate"|"plugin disable"|"plugin enable") kind=plugins ;;
               esac
           fi ;;
    esac
    if [[ -n "$kind" ]]; then
        local IFS=$'\n'
        COMPREPLY=($(compgen -W "$(flexctl __complete "$kind" "$cur" 2>/dev/null)" -- "$cur"))
        return 0
    fi
    _flexctl "$@"
}
complete -F _flexctl_items -o nosort -o bashdefault -o default flexctl
"#;

const FISH: &str = r#"
# Names and ids from the live FlexCore (flexctl __complete).
complete -c flexctl -n "__fish_seen_subcommand_from run; and __fish_seen_subcommand_from show cancel logs" -f -a "(flexctl __complete runs (commandline -ct) 2>/dev/null)"
complete -c flexctl -n "__fish_seen_subcommand_from run; and __fish_seen_subcommand_from start" -f -a "(flexctl __complete pipelines (commandline -ct) 2>/dev/null)"
complete -c flexctl -n "__fish_seen_subcommand_from pipeline; and __fish_seen_subcommand_from show update pause resume archive delete" -f -a "(flexctl __complete pipelines (commandline -ct) 2>/dev/null)"
complete -c flexctl -n "__fish_seen_subcommand_from schedule; and __fish_seen_subcommand_from show update pause resume delete backfill" -f -a "(flexctl __complete schedules (commandline -ct) 2>/dev/null)"
complete -c flexctl -n "__fish_seen_subcommand_from plugin; and __fish_seen_subcommand_from show deprecate disable enable" -f -a "(flexctl __complete plugins (commandline -ct) 2>/dev/null)"
"#;
