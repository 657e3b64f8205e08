//! Subcommands over what the stack holds: scoped state (`plantd state`),
//! commands not delivered yet (`plantd commands`) and items parked in the
//! dead-letter queue (`plantd dlq`).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum StateCmd {
    /// List the scopes you can read (`--create NAME` creates one first).
    Scopes {
        /// Create this scope.
        #[arg(long)]
        create: Option<String>,
    },
    /// List a scope's keys.
    List {
        /// The scope.
        scope: String,
    },
    /// Print a value (its revision goes to stderr).
    Get {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
    },
    /// Store a value.
    Set {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Only if the stored revision is still this one.
        #[arg(long)]
        if_match: Option<String>,
        /// Content type of the value.
        #[arg(long, default_value = "application/json")]
        content_type: String,
    },
    /// Delete a value.
    Delete {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCmd {
    /// List parked items, oldest first.
    List {
        /// Only this consumer's (`<function>_<stream>`, e.g. logger_PLANTD_LOGS).
        #[arg(long)]
        consumer: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Hand parked item SEQ back to the function that failed on it (the
    /// trigger must be running); removed from PLANTD_DLQ once handled.
    Replay {
        /// Its sequence in PLANTD_DLQ (first column of `plantd dlq list`).
        seq: u64,
        /// Seconds to wait for the function.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CommandsCmd {
    /// The site's pending commands, oldest first: queued for its edge, or
    /// held (nobody subscribes to the topic, or behind such a command).
    Pending {
        /// The site.
        site: String,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Cancel a pending command: it is never delivered afterwards.
    Cancel {
        /// The site.
        site: String,
        /// The command's id (the sequence `plantd command` printed).
        id: u64,
    },
}
