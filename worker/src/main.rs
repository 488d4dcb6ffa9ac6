//! The `worker` binary: `run` (the default), `check-config FILE`, `schema`, `migrate`.

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
    /// Validate a sync-rules file and check that every secret it names is set.
    CheckConfig {
        /// The file.
        file: String,
    },
    /// Print the JSON Schema of sync-rules.json.
    Schema,
    /// Apply the database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Schema => {
            print!("{}", config::rules_schema());
            Ok(())
        }
        Command::CheckConfig { file } => {
            let rules = worker::check_config(&file)?;
            println!(
                "{file}: valid ({} systems, {} rules; every secret is set)",
                rules.systems.len(),
                rules.rules.len()
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
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let settings = config::Settings::from_env()?;
    let rules = worker::check_config(&settings.rules_path)?;
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
    worker.run(Some(admin), shutdown).await
}
