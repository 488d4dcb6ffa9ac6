//! The recordsync domain model: pure types and functions, no I/O.
//!
//! Layout:
//! - [`rules`]: the shape of `sync-rules.json` (systems and sync rules), as plain data:
//!   declarations only, including the declared variants and transforms; it imports
//!   neither `identity` nor `mapping`, which say what those do.
//! - [`record`]: a record as the domain sees it, whichever system it came from.
//! - [`identity`]: deterministic identity resolution (stored link, lookup value,
//!   declared variants) and its decisions.
//! - [`import`]: the rows of a partner file checked as records of a `file` source.
//! - [`mapping`]: field mapping with declared transforms.
//! - [`sync`]: the decision for one source record under one rule.
//! - [`history`]: the append-only history entries and their plain-language summaries.
//! - [`reconcile`]: a linked record's two sides compared field by field, and the action
//!   each difference calls for under the rule's ownership.
//! - [`budget`]: a system's daily API budget: used, forecast, and whether background
//!   work waits.
//! - [`drift`]: what the rules rely on in an app compared with its schema now and
//!   its last good schema: fields gone, types changed, options gone, required fields.
//! - [`plan`]: the step's decision once its inputs are read: a linked record's
//!   observations under field authority, a first link, a create, a rehydration.
//!
//! Invariant: this crate never imports tokio, sqlx, lapin, reqwest or axum. Everything
//! here is a plain function over plain types, so it can be tested exhaustively.

pub mod authority;
pub mod budget;
pub mod drift;
pub mod history;
pub mod identity;
pub mod import;
pub mod mapping;
pub mod plan;
pub mod preview;
pub mod reconcile;
pub mod record;
pub mod rules;
pub mod sync;
pub mod versions;
pub mod windows;
