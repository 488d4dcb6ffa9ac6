//! Integration tests that start the sandbox on an ephemeral port and drive it over HTTP.

mod admin;
mod common;
mod helpdesk;
mod kintone;
