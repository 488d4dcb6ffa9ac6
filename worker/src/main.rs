//! The `worker` binary: `run` (the default), `check-config FILE`, `schema`, `migrate`,
//! and the operator's commands; the command line itself is in [`cli`].
//!
//! The operator's commands (`pause`, `resume`, `rehydrate`, `conflicts`, `dlq`) do not
//! call the admin API: they talk to PostgreSQL and RabbitMQ directly, with
//! `RECORDSYNC_DATABASE_URL` and `RECORDSYNC_AMQP_URL`. Whoever holds those credentials
//! can do everything the `admin` role can, so they need no admin token (and
//! `RECORDSYNC_ADMIN_TOKEN` is not read). The history credits them as `$USER (command
//! line)`.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::dispatch(cli::Cli::parse()).await
}
