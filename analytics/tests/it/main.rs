//! Every integration test of this crate, in one binary: one link instead
//! of one per file keeps the cold build (and its disk) small. Each file
//! is a module; shared helpers are the directories beside them.

mod anomalies;
mod docs;
mod exactly_once;
mod patterns;
mod reference;
mod windows;
