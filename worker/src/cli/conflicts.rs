//! The `conflicts` commands: `list` the conflicts in one status, `resolve` one (the
//! value is queued and the workers write it to every system), `dismiss` one (the data
//! was fixed elsewhere).
//!
//! Each reads the rules first, as every operator command does: a rules file that does
//! not load stops them.

use super::Context;

/// `conflicts list [--status S]`.
pub async fn list(ctx: &Context, status: &str) -> anyhow::Result<()> {
    ctx.rules()?;
    let store = ctx.store().await?;
    let rows = store.conflicts(status).await?;
    for c in &rows {
        println!(
            "{:>6}  {:<18} {:<24} record {:<8} {}",
            c.id, c.kind, c.rule, c.source_record_id, c.summary
        );
    }
    println!("{} {status} conflict(s)", rows.len());
    Ok(())
}

/// `conflicts resolve ID ...`: the resolution is queued, credited to `$USER (command
/// line)`.
pub async fn resolve(
    ctx: &Context,
    id: i64,
    resolution: &worker::ops::Resolution,
) -> anyhow::Result<()> {
    let rules = ctx.rules()?;
    let store = ctx.store().await?;
    let actor = format!(
        "{} (command line)",
        std::env::var("USER").unwrap_or_else(|_| "an operator".into())
    );
    let broker = ctx.broker().await?;
    worker::ops::resolve(
        store,
        rules,
        &broker.publisher,
        &broker.names,
        id,
        resolution,
        &actor,
    )
    .await?;
    println!("resolution of conflict {id} queued; the workers write it to every system");
    Ok(())
}

/// `conflicts dismiss ID`.
pub async fn dismiss(ctx: &Context, id: i64) -> anyhow::Result<()> {
    ctx.rules()?;
    let store = ctx.store().await?;
    if store.dismiss_conflict(id).await? {
        println!("conflict {id} dismissed");
    } else {
        anyhow::bail!("no open conflict {id}");
    }
    Ok(())
}
