//! The `worker` binary: `run` (the default), `check-config FILE`, `schema`, `migrate`,
//! and the operator's commands.
//!
//! The operator's commands (`pause`, `resume`, `rehydrate`, `conflicts`, `dlq`) do not
//! call the admin API: they talk to PostgreSQL and RabbitMQ directly, with
//! `RECORDSYNC_DATABASE_URL` and `RECORDSYNC_AMQP_URL`. Whoever holds those credentials
//! can do everything the `admin` role can, so they need no admin token (and
//! `RECORDSYNC_ADMIN_TOKEN` is not read). The history credits them as `$USER (command
//! line)`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "worker",
    about = "recordsync worker: consumes webhooks, decides, writes targets"
)]
struct Cli {
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
        migrations: Vec<config::migration::Migration>,
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

/// Which dead letters.
#[derive(clap::Args)]
struct Filter {
    /// Only these ids.
    #[arg(long = "id")]
    ids: Vec<i64>,
    /// Only this rule.
    #[arg(long)]
    rule: Option<String>,
    /// Only this source system.
    #[arg(long)]
    system: Option<String>,
    /// Only this error class (server, transport, rate_limited, unauthorized, undecodable, poison, …).
    #[arg(long)]
    class: Option<String>,
    /// Dead-lettered at or after (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Dead-lettered before (RFC 3339).
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<Filter> for store::DeadFilter {
    fn from(f: Filter) -> Self {
        store::DeadFilter {
            ids: f.ids,
            rule: f.rule,
            system: f.system,
            class: f.class,
            since: f.since,
            until: f.until,
            status: None,
        }
    }
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
        filter: Filter,
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
        filter: Filter,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Schema => {
            print!("{}", config::rules_schema());
            Ok(())
        }
        Command::CheckConfig {
            file,
            live,
            previous,
            migrations,
        } => {
            let rules = worker::check_config(&file)?;
            println!(
                "{file}: valid ({} systems, {} rules; every secret is set)",
                rules.systems.len(),
                rules.rules.len()
            );
            if let Some(previous) = previous {
                let old = config::load_rules(&previous)?;
                let mut refused = config::migration::migration_problems(&rules, &migrations);
                for o in config::migration::orphaning(&old, &rules) {
                    if o.covered_by(&migrations) {
                        println!("covered by a named migration: {o}");
                    } else {
                        refused.push(format!("{o}; {}", o.remedy()));
                    }
                }
                for r in &refused {
                    eprintln!("refused: {r}");
                }
                anyhow::ensure!(
                    refused.is_empty(),
                    "{file} would orphan what is stored under {} rule change(s) of {}: name a migration for each",
                    refused.len(),
                    previous.display()
                );
                println!(
                    "{file}: nothing stored under a rule of {} is orphaned",
                    previous.display()
                );
            }
            if !live {
                return Ok(());
            }
            let settings = config::Settings::from_env()?;
            let worker = worker::Worker::new(settings, rules)?;
            worker
                .store()
                .migrate()
                .await
                .context("Failed to reach PostgreSQL")?;
            let processor = worker.processor();
            let checks =
                worker::schema::check(&processor, None, worker::schema::Mode::DryRun).await?;
            for line in worker::schema::lines(&checks) {
                println!("{line}");
            }
            let breaking: usize = checks.iter().map(|c| c.breaking()).sum();
            anyhow::ensure!(
                breaking == 0,
                "{file}: {breaking} field(s) the rules rely on do not match the live systems"
            );
            Ok(())
        }
        Command::ForgetLinks { rule } => {
            let settings = config::Settings::from_env()?;
            let store = store::Store::connect(&settings.database_url, 2)
                .await
                .context("Failed to connect to PostgreSQL")?;
            store.migrate().await.context("Failed to migrate")?;
            let n = store.forget_links(&rule).await?;
            println!(
                "rule {rule}: {n} link(s) forgotten; each record is matched by identity at its next change (`worker rehydrate --rule {rule}` does it now)"
            );
            Ok(())
        }
        Command::RenameRule { from, to } => {
            let settings = config::Settings::from_env()?;
            let store = store::Store::connect(&settings.database_url, 2)
                .await
                .context("Failed to connect to PostgreSQL")?;
            store.migrate().await.context("Failed to migrate")?;
            let moved = store.rename_rule(&from, &to).await?;
            let rows: u64 = moved.iter().map(|(_, n)| n).sum();
            println!(
                "rule {from} is now {to}: {rows} row(s) moved ({}); its history is read under both names",
                moved
                    .iter()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Command::Migrate => {
            let settings = config::Settings::from_env()?;
            let store = store::Store::connect(&settings.database_url, 2)
                .await
                .context("Failed to connect to PostgreSQL")?;
            store.migrate().await.context("Failed to migrate")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Run => run().await,
        Command::Dlq { command } => dlq(command).await,
        Command::Conflicts { command } => conflicts(command).await,
        Command::Pause {
            scope,
            name,
            reason,
        } => {
            let (settings, rules, store) = operator().await?;
            let _ = settings;
            worker::ops::pause(&store, &rules, &scope, &name, reason.as_deref()).await?;
            println!(
                "paused {scope} {name}: its work is parked until `worker resume {scope} {name}`"
            );
            Ok(())
        }
        Command::Resume { scope, name } => {
            let (_, rules, store) = operator().await?;
            let was = worker::ops::resume(&store, &rules, &scope, &name).await?;
            let parked = store.parked(None).await?.len();
            println!(
                "resumed {scope} {name}{}; {parked} parked record(s) are flushed by the workers",
                if was { "" } else { " (it was not paused)" }
            );
            Ok(())
        }
        Command::Resync { rule, full, status } => {
            let (settings, worker) = migrated_worker().await?;
            if status {
                for c in worker.store().resync_cursors().await? {
                    println!("{}", serde_json::to_string(&c)?);
                }
                return Ok(());
            }
            let rule = rule.context("--rule is required")?;
            let (_conn, publisher, names) = broker(&settings).await?;
            let processor = worker.processor();
            let job = worker::resync::ResyncJob::claim(&processor, &rule).await?;
            let report = job
                .run(
                    &processor,
                    &publisher,
                    &names,
                    full,
                    worker::resync::PAGE_SIZE,
                )
                .await?;
            println!(
                "resync of {}: {} record(s) listed in {} page(s), {} queued (the others were already synced at that revision)",
                report.rule, report.listed, report.pages, report.queued
            );
            Ok(())
        }
        Command::Reconcile {
            rule,
            dry_run,
            settle_seconds,
            runs,
        } => {
            let (settings, worker) = migrated_worker().await?;
            if runs {
                for r in worker.store().reconcile_runs(rule.as_deref(), 20).await? {
                    println!("{}", serde_json::to_string(&r)?);
                }
                return Ok(());
            }
            let rule = rule.context("--rule is required")?;
            let settle = settle_seconds
                .map(std::time::Duration::from_secs)
                .unwrap_or(settings.ledger_settle());
            let processor = worker.processor();
            let job = worker::reconcile::ReconcileJob::claim(&processor, &rule).await?;
            let report = if dry_run {
                job.run(&processor, None, true, settle).await?
            } else {
                let (_conn, publisher, names) = broker(&settings).await?;
                job.run(&processor, Some((&publisher, &names)), false, settle)
                    .await?
            };
            println!(
                "reconcile run {} of {}: {} linked, {} compared ({} of {} bucket(s) apart, {} record(s) field by field), {} left out as in flight, {} missing in the source, {} in the target; {} apart ({}); {} repair(s) queued{}",
                report.run,
                report.rule,
                report.linked,
                report.compared,
                report.buckets_apart,
                report.buckets,
                report.rows_compared,
                report.skipped_in_flight,
                report.source_missing,
                report.target_missing,
                report.records_apart,
                report
                    .differences
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                report.repairs_queued,
                if report.dry_run { " (dry run)" } else { "" }
            );
            for f in &report.found {
                println!(
                    "  record {} / {}: {} — source {}, target {}; owner {}; {:?}",
                    f.record_id,
                    f.target_id,
                    f.difference.field,
                    f.difference.source,
                    f.difference.target,
                    f.difference.owner,
                    f.difference.action
                );
            }
            Ok(())
        }
        Command::Preview {
            rules: new_path,
            rule,
            records,
            since,
            json,
        } => {
            let new = config::load_rules(&new_path)?;
            // Read-only: no migration, no broker.
            let (_, worker) = worker_from_env()?;
            let report =
                worker::preview::preview(&worker.processor(), &new, &rule, records, since).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for line in worker::preview::lines(&report) {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Command::Import {
            rule,
            file,
            dry_run,
            list,
            json,
        } => {
            let (settings, worker) = migrated_worker().await?;
            if list {
                for r in worker.store().imports(rule.as_deref(), 20).await? {
                    println!("{}", serde_json::to_string(&r)?);
                }
                return Ok(());
            }
            let (rule, path) = (
                rule.context("--rule is required")?,
                file.context("FILE is required")?,
            );
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let processor = worker.processor();
            let progress = |p: worker::import::Progress| {
                eprintln!(
                    "{}/{} record(s) queued, {:.0}/s{}",
                    p.done,
                    p.total,
                    p.rate,
                    p.eta_seconds
                        .map(|s| format!(", {s:.0} s left"))
                        .unwrap_or_default()
                )
            };
            let report = if dry_run {
                worker::import::import(&processor, None, &rule, &name, &bytes, progress).await?
            } else {
                let (_conn, publisher, names) = broker(&settings).await?;
                worker::import::import(
                    &processor,
                    Some((&publisher, &names)),
                    &rule,
                    &name,
                    &bytes,
                    progress,
                )
                .await?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for line in worker::import::lines(&report) {
                    println!("{line}");
                }
            }
            anyhow::ensure!(
                report.invalid_rows == 0,
                "{} row(s) of {name} are invalid and were not imported",
                report.invalid_rows
            );
            Ok(())
        }
        Command::Budget { json } => {
            let (_, worker) = migrated_worker().await?;
            let budgets = worker::budget::status(&worker.processor()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&budgets)?);
            } else if budgets.is_empty() {
                println!("no system declares a budget");
            }
            for b in budgets.iter().filter(|_| !json) {
                let state = match &b.background {
                    domain::budget::Verdict::Go => "resync and reconcile go on".to_owned(),
                    domain::budget::Verdict::Hold { reason } => reason.clone(),
                };
                println!(
                    "{}: {} of {} requests used today, {} forecast; {state}",
                    b.system, b.usage.used_today, b.budget, b.forecast
                );
            }
            Ok(())
        }
        Command::SchemaCheck {
            system,
            dry_run,
            accept,
            latest,
            json,
        } => {
            let (_, worker) = migrated_worker().await?;
            if latest {
                for c in worker
                    .store()
                    .schema_checks_latest(system.as_deref())
                    .await?
                {
                    println!("{}", serde_json::to_string(&c)?);
                }
                return Ok(());
            }
            use worker::schema::Mode;
            let mode = match (dry_run, accept) {
                (true, _) => Mode::DryRun,
                (false, true) => Mode::Accept,
                (false, false) => Mode::Record,
            };
            let processor = worker.processor();
            let checks = worker::schema::check(&processor, system.as_deref(), mode).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                for line in worker::schema::lines(&checks) {
                    println!("{line}");
                }
            }
            let breaking: usize = checks.iter().map(|c| c.breaking()).sum();
            anyhow::ensure!(
                breaking == 0 || accept,
                "{breaking} breaking schema drift(s): fix the system or the rules, or take the change as the baseline with --accept"
            );
            Ok(())
        }
        Command::Ledger {
            rule,
            settle_seconds,
            json,
        } => {
            let (settings, _, store) = operator().await?;
            let settle = settle_seconds
                .map(std::time::Duration::from_secs)
                .unwrap_or(settings.ledger_settle());
            let ledgers = store.ledger(rule.as_deref(), settle).await?;
            if json {
                println!("{}", worker::ops::ledger_json(&ledgers, settle));
            } else if ledgers.is_empty() {
                println!("no events seen yet");
            } else {
                for line in worker::ops::ledger_lines(&ledgers) {
                    println!("{line}");
                }
            }
            let lost: i64 = ledgers.iter().map(|l| l.imbalance()).sum();
            anyhow::ensure!(
                lost == 0,
                "{lost} event(s) seen and then lost: no outcome, no dead letter, not parked, last seen more than {} s ago",
                settle.as_secs()
            );
            Ok(())
        }
        Command::Rehydrate { rule, record } => {
            // The worker's processor: its limiter paces the source's id listing.
            let (settings, worker) = worker_from_env()?;
            let (_conn, publisher, names) = broker(&settings).await?;
            let ids = worker::ops::rehydrate(
                &worker.processor(),
                &publisher,
                &names,
                &rule,
                record.as_deref(),
            )
            .await?;
            println!("queued {} record(s) for rehydration", ids.len());
            Ok(())
        }
    }
}

async fn conflicts(command: ConflictCommand) -> anyhow::Result<()> {
    let (settings, rules, store) = operator().await?;
    match command {
        ConflictCommand::List { status } => {
            let rows = store.conflicts(&status).await?;
            for c in &rows {
                println!(
                    "{:>6}  {:<18} {:<24} record {:<8} {}",
                    c.id, c.kind, c.rule, c.source_record_id, c.summary
                );
            }
            println!("{} {status} conflict(s)", rows.len());
        }
        ConflictCommand::Resolve {
            id,
            value,
            pick,
            target_id,
            override_candidates,
            reason,
        } => {
            let value =
                value.map(|v| serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v)));
            let r = worker::ops::Resolution {
                value,
                pick,
                target_id,
                by: None,
                override_candidates,
                reason,
            };
            let actor = format!(
                "{} (command line)",
                std::env::var("USER").unwrap_or_else(|_| "an operator".into())
            );
            let (_conn, publisher, names) = broker(&settings).await?;
            worker::ops::resolve(&store, &rules, &publisher, &names, id, &r, &actor).await?;
            println!("resolution of conflict {id} queued; the workers write it to every system");
        }
        ConflictCommand::Dismiss { id } => {
            if store.dismiss_conflict(id).await? {
                println!("conflict {id} dismissed");
            } else {
                anyhow::bail!("no open conflict {id}");
            }
        }
    }
    Ok(())
}

/// Settings, rules and the store, for operator commands.
/// The command line's broker connection (kept while it publishes), a confirm-mode
/// publisher and the queue names.
async fn broker(
    settings: &config::Settings,
) -> anyhow::Result<(queue::Connection, queue::Publisher, queue::Names)> {
    let (conn, _) = queue::connect_any(&settings.amqp_url, 0, "recordsync-cli")
        .await
        .context("Failed to connect to RabbitMQ")?;
    let publisher = queue::Publisher::open(
        &conn,
        std::time::Duration::from_millis(settings.publish_timeout_ms),
    )
    .await?;
    Ok((conn, publisher, queue::Names::new(&settings.queue_prefix)))
}

/// A worker built from the environment's settings and rules, not running.
fn worker_from_env() -> anyhow::Result<(config::Settings, worker::Worker)> {
    let settings = config::Settings::from_env()?;
    let rules = config::load_rules(&settings.rules_path)?;
    let worker = worker::Worker::new(settings.clone(), rules)?;
    Ok((settings, worker))
}

/// [`worker_from_env`], with its database migrated (the commands that write runs,
/// cursors or commands).
async fn migrated_worker() -> anyhow::Result<(config::Settings, worker::Worker)> {
    let (settings, worker) = worker_from_env()?;
    worker
        .store()
        .migrate()
        .await
        .context("Failed to reach PostgreSQL")?;
    Ok((settings, worker))
}

async fn operator() -> anyhow::Result<(config::Settings, domain::rules::SyncRules, store::Store)> {
    let settings = config::Settings::from_env()?;
    let rules = config::load_rules(&settings.rules_path)?;
    let store = store::Store::connect(&settings.database_url, 2)
        .await
        .context("Failed to connect to PostgreSQL")?;
    Ok((settings, rules, store))
}

async fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    let settings = config::Settings::from_env()?;
    let store = store::Store::connect(&settings.database_url, 2)
        .await
        .context("Failed to connect to PostgreSQL")?;
    match command {
        DlqCommand::List { filter, replayed } => {
            let mut filter: store::DeadFilter = filter.into();
            filter.status = replayed.then(|| "replayed".to_owned());
            let rows = store.dead_letters(&filter, 1_000).await?;
            for r in &rows {
                println!(
                    "{:>6}  {}  {:<14} {:<24} record {:<8} attempts {}  {}",
                    r.id,
                    r.dead_at.format("%Y-%m-%d %H:%M:%S"),
                    r.class,
                    r.rule.as_deref().unwrap_or("-"),
                    r.record_id.as_deref().unwrap_or("-"),
                    r.attempts,
                    r.reason
                );
            }
            println!("{} dead letter(s)", rows.len());
        }
        DlqCommand::Show { id } => {
            let Some(r) = store.dead_letter(id).await? else {
                anyhow::bail!("no dead letter {id}");
            };
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&r.body).into_owned())
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"dead_letter": r, "body": body}))?
            );
        }
        DlqCommand::Replay { filter } => {
            let (_conn, publisher, names) = broker(&settings).await?;
            let ids = worker::dlq::replay(&store, &publisher, &names, &filter.into()).await?;
            println!("replayed {} dead letter(s): {:?}", ids.len(), ids);
        }
        DlqCommand::Purge { filter, yes } => {
            let filter: store::DeadFilter = filter.into();
            let n = store.dead_letters(&filter, 1_000_000).await?.len();
            if n == 0 {
                println!("nothing to purge");
                return Ok(());
            }
            if !yes {
                eprint!("purge {n} dead letter(s) for good? type yes: ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim() != "yes" {
                    println!("nothing purged");
                    return Ok(());
                }
            }
            println!(
                "purged {} dead letter(s)",
                store.purge_dead_letters(&filter).await?
            );
        }
    }
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let traces = config::telemetry::init_traces("recordsync-worker").map_err(anyhow::Error::msg)?;
    let settings = config::Settings::from_env()?;
    let rules = worker::check_config(&settings.rules_path)?;
    // An admin API without tokens is served on loopback only: refuse before listening.
    let auth = worker::auth::Auth::from_env()?;
    let addresses = tokio::net::lookup_host(&settings.admin_listen)
        .await
        .with_context(|| {
            format!(
                "RECORDSYNC_ADMIN_LISTEN={} is not an address",
                settings.admin_listen
            )
        })?;
    for addr in addresses {
        auth.check_listener(addr)?;
    }
    let admin = tokio::net::TcpListener::bind(&settings.admin_listen)
        .await
        .with_context(|| format!("Failed to listen on {}", settings.admin_listen))?;
    let worker = worker::Worker::new(settings, rules)?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping: finishing events in flight");
        stop.cancel();
    });
    let ran = worker.run(Some(admin), shutdown).await;
    // What is still batched goes out before the process ends.
    let _ = traces.shutdown();
    ran
}
