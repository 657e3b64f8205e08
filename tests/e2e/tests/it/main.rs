//! Every integration test of this crate, in one binary: one link instead
//! of one per file keeps the cold build (and its disk) small. Each file
//! is a module; shared helpers are the directories beside them.

mod commands;
mod devices;
mod keys;
mod orgs;
mod revocation;
mod state;
