//! Integration tests on the real RabbitMQ and PostgreSQL, one binary. Each test starts
//! its own environment (sandbox, ingest, workers on port 0, its own database and queue
//! prefix) and tears it down.

mod authority;
mod bench_smoke;
mod budget;
mod commands;
mod console;
mod deletions;
mod deploy;
mod docs;
mod failures;
mod harness;
mod import;
mod intake;
mod invariants;
mod killed;
mod ledger;
mod limits;
mod links;
mod logs;
mod parking;
mod preview;
mod reconcile;
mod recovery;
mod rename;
mod resync;
mod retention;
mod schema;
mod secrets;
mod security;
mod shapes;
mod step;
mod sync;
mod traces;
