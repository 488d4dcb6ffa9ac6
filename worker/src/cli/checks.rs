//! The commands that check the fleet and fail when something is wrong: `budget` (each
//! system's daily API budget), `schema-check` (the fields the rules rely on, against the
//! live systems) and `ledger` (every event seen against what became of it).

use super::Context;

/// `budget`: each system's requests used today, the day's forecast, and whether resync
/// and reconcile wait for it.
pub async fn budget(ctx: &Context, json: bool) -> anyhow::Result<()> {
    let worker = ctx.migrated_worker().await?;
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

/// `schema-check [--system S] [--dry-run | --accept]`, or `schema-check --latest` for
/// the stored checks. Fails on a breaking drift unless it is accepted.
pub async fn schema_check(
    ctx: &Context,
    system: Option<&str>,
    dry_run: bool,
    accept: bool,
    latest: bool,
    json: bool,
) -> anyhow::Result<()> {
    let worker = ctx.migrated_worker().await?;
    if latest {
        for c in worker.store().schema_checks_latest(system).await? {
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
    let checks = worker::schema::check(&processor, system, mode).await?;
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

/// `ledger [--rule RULE] [--settle-seconds N]`. Fails when events were seen and then
/// lost.
pub async fn ledger(
    ctx: &Context,
    rule: Option<&str>,
    settle_seconds: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    // The rules are read (and must be valid), as for every operator command.
    ctx.rules()?;
    let store = ctx.store().await?;
    let settle = settle_seconds
        .map(std::time::Duration::from_secs)
        .unwrap_or(ctx.settings()?.ledger_settle());
    let ledgers = store.ledger(rule, settle).await?;
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
