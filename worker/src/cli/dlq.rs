//! The `dlq` commands on the dead letters drained into PostgreSQL: `list`, `show` one
//! with its body and attempt history, `replay` (republished as first attempts), and
//! `purge` (deleted for good, after a confirmation). Also the [`Filter`] flags that say
//! which dead letters.

use super::Context;

/// Which dead letters.
#[derive(clap::Args)]
pub struct Filter {
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

/// `dlq list [FILTER] [--replayed]`.
pub async fn list(ctx: &Context, filter: Filter, replayed: bool) -> anyhow::Result<()> {
    let store = ctx.store().await?;
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
    Ok(())
}

/// `dlq show ID`: the dead letter and its body, as JSON.
pub async fn show(ctx: &Context, id: i64) -> anyhow::Result<()> {
    let store = ctx.store().await?;
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
    Ok(())
}

/// `dlq replay [FILTER]`.
pub async fn replay(ctx: &Context, filter: Filter) -> anyhow::Result<()> {
    let store = ctx.store().await?;
    let broker = ctx.broker().await?;
    let ids = worker::dlq::replay(store, &broker.publisher, &broker.names, &filter.into()).await?;
    println!("replayed {} dead letter(s): {:?}", ids.len(), ids);
    Ok(())
}

/// `dlq purge [FILTER] [--yes]`: asks on stdin unless `--yes`.
pub async fn purge(ctx: &Context, filter: Filter, yes: bool) -> anyhow::Result<()> {
    let store = ctx.store().await?;
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
    Ok(())
}
