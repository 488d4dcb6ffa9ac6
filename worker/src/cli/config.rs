//! The commands about the settings, the rules file and what the store holds under it:
//! `settings` lists the settings in use and where each came from, `schema` prints
//! the file's JSON Schema, `check-config` validates a file (against the rules in use
//! and, with `--live`, the systems), `rename-rule` and `forget-links` carry the store
//! through a rule change, and `migrate` applies the database migrations.

use super::Context;
use std::path::PathBuf;

/// `schema`: the JSON Schema of sync-rules.json.
pub fn schema() -> anyhow::Result<()> {
    print!("{}", config::rules_schema());
    Ok(())
}

/// `settings`: each setting, its value and where it came from.
pub fn settings() -> anyhow::Result<()> {
    let loaded = config::Settings::load(|k| std::env::var(k).ok())?;
    let width = loaded.shown.iter().map(|s| s.var.len()).max().unwrap_or(0);
    for s in &loaded.shown {
        println!("{:width$}  {}  ({})", s.var, s.value, s.source);
    }
    Ok(())
}

/// `check-config FILE`: the file is valid and every secret it names is set; with
/// `--previous`, nothing stored is orphaned that no migration covers; with `--live`,
/// every field it relies on matches the live systems.
pub async fn check_config(
    ctx: &Context,
    file: &str,
    live: bool,
    previous: Option<PathBuf>,
    migrations: &[config::migration::Migration],
) -> anyhow::Result<()> {
    let rules = worker::check_config(file)?;
    println!(
        "{file}: valid ({} systems, {} rules; every secret is set)",
        rules.systems.len(),
        rules.rules.len()
    );
    if let Some(previous) = previous {
        let old = config::load_rules(&previous)?;
        let mut refused = config::migration::migration_problems(&rules, migrations);
        for o in config::migration::orphaning(&old, &rules) {
            if o.covered_by(migrations) {
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
    // The worker reads the systems with the file's rules, not the ones in use.
    ctx.use_rules(rules);
    let worker = ctx.migrated_worker().await?;
    let processor = worker.processor();
    let checks = worker::schema::check(&processor, None, worker::schema::Mode::DryRun).await?;
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

/// `rename-rule FROM TO`: what the store holds under the rule moves to its new name.
pub async fn rename_rule(ctx: &Context, from: &str, to: &str) -> anyhow::Result<()> {
    let store = ctx.migrated_store().await?;
    let moved = store.rename_rule(from, to).await?;
    let rows: u64 = moved.iter().map(|m| m.rows).sum();
    println!(
        "rule {from} is now {to}: {rows} row(s) moved ({}); its history is read under both names",
        moved
            .iter()
            .map(|m| format!("{} {}", m.table, m.rows))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// `forget-links RULE`: the rule's links and sync state are forgotten.
pub async fn forget_links(ctx: &Context, rule: &str) -> anyhow::Result<()> {
    let store = ctx.migrated_store().await?;
    let n = store.forget_links(rule).await?;
    println!(
        "rule {rule}: {n} link(s) forgotten; each record is matched by identity at its next change (`worker rehydrate --rule {rule}` does it now)"
    );
    Ok(())
}

/// `migrate`: the database migrations, applied.
pub async fn migrate(ctx: &Context) -> anyhow::Result<()> {
    ctx.migrated_store().await?;
    println!("migrations applied");
    Ok(())
}
