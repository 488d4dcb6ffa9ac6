//! The worker's command line: the clap-derived [`Cli`] with its [`Command`]s, and the
//! one [`dispatch`] that opens a [`Context`] and hands each command to its handler.
//!
//! The handlers live by subject: [`config`] (the rules file and the store's schema),
//! [`jobs`] (resync, reconcile, import, preview), [`ops`] (pause, resume, rehydrate),
//! [`checks`] (budget, schema-check, ledger), [`conflicts`], [`dlq`], and [`run`] (the
//! worker itself).

mod checks;
mod config;
mod conflicts;
mod context;
mod dlq;
mod jobs;
mod ops;
mod run;

use clap::{Parser, Subcommand};
use context::Context;

#[derive(Parser)]
#[command(
    name = "worker",
    about = "recordsync worker: consumes webhooks, decides, writes targets"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume and process events (the default).
    Run,
    /// Validate a sync-rules file and check that every secret it names is set. With
    /// `--live`, also read each system's schema (kintone: the app's form; rest: a
    /// sample record), through the limits, and name every field the file relies on
    /// that is missing, retyped or short of an option (nothing is stored or paused).
    CheckConfig {
        /// The file.
        file: String,
        /// Check the fields against the live systems (needs the database for the
        /// fleet-wide limits). `--online` is the same.
        #[arg(long, visible_alias = "online")]
        live: bool,
        /// The rules file in use now: a change that would orphan what is stored under a
        /// rule (a rule renamed or removed, its source or target moved, its identity
        /// fields changed) is refused unless a `--migration` covers it.
        #[arg(long)]
        previous: Option<std::path::PathBuf>,
        /// How an orphaning change is handled: `rename:OLD=NEW`, `retire:RULE`,
        /// `relink:RULE` or `rematch:RULE` (repeat for several).
        #[arg(long = "migration")]
        migrations: Vec<::config::migration::Migration>,
    },
    /// Move what the store holds under a rule to its new name (links, state,
    /// conflicts, cursors, parked work, pauses; the history is read under both names).
    /// Run it while no worker processes the rule, before the renamed rules are deployed.
    RenameRule {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
    /// Forget a rule's links and sync state (its source or target moved: the
    /// `relink` migration). Each record is matched afresh, by identity, at its next
    /// change. Run it while no worker processes the rule.
    ForgetLinks {
        /// The rule.
        rule: String,
    },
    /// Print the JSON Schema of sync-rules.json.
    Schema,
    /// Print every setting in use, its value (a URL without its password) and where
    /// it came from: the default, the settings file's line (`RECORDSYNC_SETTINGS`), or
    /// the environment. A bad value fails here as it would at start.
    Settings,
    /// Apply the database migrations and exit.
    Migrate,
    /// Pause a rule or a system: its work is parked, nothing is lost.
    Pause {
        /// `rule` or `system`.
        #[arg(value_parser = ["rule", "system"])]
        scope: String,
        /// Its name.
        name: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a rule or a system: the workers flush what was parked.
    Resume {
        /// `rule` or `system`.
        #[arg(value_parser = ["rule", "system"])]
        scope: String,
        /// Its name.
        name: String,
    },
    /// Refetch and resync one record, or every record of a rule.
    Rehydrate {
        /// The rule.
        #[arg(long)]
        rule: String,
        /// One source record (all of the rule's source records when left out).
        #[arg(long)]
        record: Option<String>,
    },
    /// Ask a rule's source for the records changed since the last scan and queue
    /// them (the running workers sync them); resumes a scan that stopped. With
    /// `--full`, every record (a backfill). `--status` prints every rule's cursor.
    Resync {
        /// The rule.
        #[arg(long, required_unless_present = "status")]
        rule: Option<String>,
        /// Every record of the source, not only the changed ones.
        #[arg(long)]
        full: bool,
        /// Print the cursors and do nothing else.
        #[arg(long)]
        status: bool,
    },
    /// Compare a rule's two systems and queue a repair for each linked record that
    /// drifted where the owner is clear. `--runs` prints the latest stored runs.
    Reconcile {
        /// The rule.
        #[arg(long, required_unless_present = "runs")]
        rule: Option<String>,
        /// Report only: queue nothing.
        #[arg(long)]
        dry_run: bool,
        /// Leave out records that moved within this many seconds (default: the
        /// longest retry delay and a minute).
        #[arg(long)]
        settle_seconds: Option<u64>,
        /// Print the latest runs and do nothing else.
        #[arg(long)]
        runs: bool,
    },
    /// What a rule change would do before it ships: reads up to `--records` linked
    /// records of the rule from both systems (limits apply) and says what the current
    /// rules and the new file would each map and write, record by record. Writes
    /// nothing.
    Preview {
        /// The new rules file.
        #[arg(long)]
        rules: std::path::PathBuf,
        /// The rule.
        #[arg(long)]
        rule: String,
        /// How many linked records to read (by source record id).
        #[arg(long, default_value_t = 100)]
        records: usize,
        /// Only the linked records synced at or after this time (RFC 3339, e.g.
        /// `2026-11-30T00:00:00Z`).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Import a partner's file (CSV with a header row, or JSON Lines) into a rule whose
    /// source is a `file` system. Every row is checked first; invalid rows are listed
    /// with their line, column and reason, and none of them is queued. Valid records
    /// are queued for the running workers; an import that stopped resumes where it
    /// stopped. Exits with 1 when some rows are invalid. `--list` prints the latest
    /// imports.
    Import {
        /// The rule.
        #[arg(long, required_unless_present = "list")]
        rule: Option<String>,
        /// The file.
        #[arg(required_unless_present = "list")]
        file: Option<std::path::PathBuf>,
        /// Check the rows only: queue nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the latest imports and do nothing else.
        #[arg(long)]
        list: bool,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Each system's daily API budget: requests used today by every worker, the day's
    /// forecast at the recent pace, and whether resync and reconcile wait for it.
    Budget {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Check now that the fields the rules rely on still exist in each system with the
    /// same type and options (kintone: the app's form; rest: a sample record), store
    /// the check and pause the rules that say `on_schema_drift: pause`. Exits with 1
    /// when a drift is breaking. `--latest` prints the latest stored checks.
    SchemaCheck {
        /// One system (default: every system).
        #[arg(long)]
        system: Option<String>,
        /// Report only: store nothing, pause nothing.
        #[arg(long, conflicts_with = "accept")]
        dry_run: bool,
        /// Take what the systems show now as the baseline (an intended change).
        #[arg(long)]
        accept: bool,
        /// Print the latest stored checks and do nothing else.
        #[arg(long)]
        latest: bool,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// The ledger, per rule, from PostgreSQL: every event seen against what became of
    /// it. Exits with 1 when events were seen and then lost (unaccounted for).
    Ledger {
        /// One rule (default: every rule).
        #[arg(long)]
        rule: Option<String>,
        /// Seconds after its last delivery an event with no outcome counts as in flight
        /// (default: the longest retry delay and a minute).
        #[arg(long)]
        settle_seconds: Option<u64>,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Conflicts: list, resolve, dismiss.
    Conflicts {
        #[command(subcommand)]
        command: ConflictCommand,
    },
    /// Dead letters: list, show, replay, purge.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum ConflictCommand {
    /// List conflicts.
    List {
        /// open, resolved or dismissed.
        #[arg(long, default_value = "open")]
        status: String,
    },
    /// Resolve a conflict: the value is written to every system through the normal path.
    Resolve {
        /// Its id.
        id: i64,
        /// The value to keep, as JSON (e.g. '"low"').
        #[arg(long)]
        value: Option<String>,
        /// Keep `incoming` or `current` instead.
        #[arg(long)]
        pick: Option<String>,
        /// For an identity conflict: the target record to link.
        #[arg(long)]
        target_id: Option<String>,
        /// Link a target record that is not one of the conflict's candidates (needs
        /// --reason, which is recorded in the record's history).
        #[arg(long = "override", requires = "reason")]
        override_candidates: bool,
        /// Why the override.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Dismiss a conflict (the data was fixed elsewhere).
    Dismiss {
        /// Its id.
        id: i64,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters.
    List {
        #[command(flatten)]
        filter: dlq::Filter,
        /// List replayed ones instead.
        #[arg(long)]
        replayed: bool,
    },
    /// Show one dead letter with its body and attempt history.
    Show {
        /// Its id.
        id: i64,
    },
    /// Replay dead letters: republish them as first attempts (same event id).
    Replay {
        #[command(flatten)]
        filter: dlq::Filter,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        filter: dlq::Filter,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs the command (`run` when none is named), in one [`Context`].
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context::default();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run::run(ctx).await,
        Command::CheckConfig {
            file,
            live,
            previous,
            migrations,
        } => config::check_config(&ctx, &file, live, previous, &migrations).await,
        Command::RenameRule { from, to } => config::rename_rule(&ctx, &from, &to).await,
        Command::ForgetLinks { rule } => config::forget_links(&ctx, &rule).await,
        Command::Schema => config::schema(),
        Command::Settings => config::settings(),
        Command::Migrate => config::migrate(&ctx).await,
        Command::Pause {
            scope,
            name,
            reason,
        } => ops::pause(&ctx, &scope, &name, reason.as_deref()).await,
        Command::Resume { scope, name } => ops::resume(&ctx, &scope, &name).await,
        Command::Rehydrate { rule, record } => ops::rehydrate(&ctx, &rule, record.as_deref()).await,
        Command::Resync { rule, full, status } => jobs::resync(&ctx, rule, full, status).await,
        Command::Reconcile {
            rule,
            dry_run,
            settle_seconds,
            runs,
        } => jobs::reconcile(&ctx, rule, dry_run, settle_seconds, runs).await,
        Command::Preview {
            rules,
            rule,
            records,
            since,
            json,
        } => jobs::preview(&ctx, &rules, &rule, records, since, json).await,
        Command::Import {
            rule,
            file,
            dry_run,
            list,
            json,
        } => jobs::import(&ctx, rule, file, dry_run, list, json).await,
        Command::Budget { json } => checks::budget(&ctx, json).await,
        Command::SchemaCheck {
            system,
            dry_run,
            accept,
            latest,
            json,
        } => checks::schema_check(&ctx, system.as_deref(), dry_run, accept, latest, json).await,
        Command::Ledger {
            rule,
            settle_seconds,
            json,
        } => checks::ledger(&ctx, rule.as_deref(), settle_seconds, json).await,
        Command::Conflicts { command } => match command {
            ConflictCommand::List { status } => conflicts::list(&ctx, &status).await,
            ConflictCommand::Resolve {
                id,
                value,
                pick,
                target_id,
                override_candidates,
                reason,
            } => {
                let resolution = worker::ops::Resolution {
                    value: value
                        .map(|v| serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v))),
                    pick,
                    target_id,
                    by: None,
                    override_candidates,
                    reason,
                };
                conflicts::resolve(&ctx, id, &resolution).await
            }
            ConflictCommand::Dismiss { id } => conflicts::dismiss(&ctx, id).await,
        },
        Command::Dlq { command } => match command {
            DlqCommand::List { filter, replayed } => dlq::list(&ctx, filter, replayed).await,
            DlqCommand::Show { id } => dlq::show(&ctx, id).await,
            DlqCommand::Replay { filter } => dlq::replay(&ctx, filter).await,
            DlqCommand::Purge { filter, yes } => dlq::purge(&ctx, filter, yes).await,
        },
    }
}
