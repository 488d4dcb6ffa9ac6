//! The operator's commands on a rule or a system: `pause` parks its work, `resume` lets
//! the workers flush what was parked, and `rehydrate` refetches one record, or every
//! record of a rule, and queues it again.

use super::Context;

/// `pause rule|system NAME [--reason WHY]`.
pub async fn pause(
    ctx: &Context,
    scope: &str,
    name: &str,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let rules = ctx.rules()?;
    let store = ctx.store().await?;
    worker::ops::pause(store, rules, scope, name, reason).await?;
    println!("paused {scope} {name}: its work is parked until `worker resume {scope} {name}`");
    Ok(())
}

/// `resume rule|system NAME`.
pub async fn resume(ctx: &Context, scope: &str, name: &str) -> anyhow::Result<()> {
    let rules = ctx.rules()?;
    let store = ctx.store().await?;
    let was = worker::ops::resume(store, rules, scope, name).await?;
    let parked = store.parked(None).await?.len();
    println!(
        "resumed {scope} {name}{}; {parked} parked record(s) are flushed by the workers",
        if was { "" } else { " (it was not paused)" }
    );
    Ok(())
}

/// `rehydrate --rule RULE [--record ID]`.
pub async fn rehydrate(ctx: &Context, rule: &str, record: Option<&str>) -> anyhow::Result<()> {
    // The worker's processor: its limiter paces the source's id listing.
    let worker = ctx.worker()?;
    let broker = ctx.broker().await?;
    let ids = worker::ops::rehydrate(
        &worker.processor(),
        &broker.publisher,
        &broker.names,
        rule,
        record,
    )
    .await?;
    println!("queued {} record(s) for rehydration", ids.len());
    Ok(())
}
