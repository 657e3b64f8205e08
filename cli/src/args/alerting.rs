//! Subcommands of alerting: alert rules (`plantd rules`), alert instances
//! and silences (`plantd alerts`), and where notifications go (`plantd
//! channels`).

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCmd {
    /// Your organisation's alert rules.
    List,
    /// Show one rule as JSON (what `apply` takes).
    Get {
        /// The rule's id.
        id: String,
    },
    /// Create or replace the rules in a JSON file: one rule or a list
    /// (docs/api.md#alerts); checked here first, naming the field.
    Apply {
        /// The file (`-`: standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete a rule (its alerts go with it).
    Delete {
        /// The rule's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AlertsCmd {
    /// Alert instances: one line each (id, state, severity, site, rule,
    /// key, value, ack).
    List {
        /// Only this state: inactive, pending, firing, no_data.
        #[arg(long)]
        state: Option<String>,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Only this severity: info, warning, critical.
        #[arg(long)]
        severity: Option<String>,
    },
    /// Acknowledge a firing alert (repeats stop until it fires again).
    Ack {
        /// The alert's id (from `plantd alerts list`).
        id: String,
        /// What you are doing about it.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// An alert's records (transitions, acks, repeats), oldest first.
    History {
        /// The alert's id.
        id: String,
    },
    /// Silence alerts matching labels for a while: their records are
    /// kept, marked silenced, and not notified.
    Silence {
        /// `label=value`, `label!=value` or `label=~regex` (repeat for
        /// more; all must match).
        #[arg(long = "match", required = true)]
        matchers: Vec<String>,
        /// How long: 30m, 2h, 1d.
        #[arg(long = "for")]
        duration: String,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Your organisation's silences.
    Silences,
    /// End a silence now.
    Unsilence {
        /// The silence's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChannelsCmd {
    /// Your organisation's notification channels (secrets never shown).
    List,
    /// Show one channel.
    Get {
        /// The channel's name.
        name: String,
    },
    /// Create or replace the channels in a JSON file: one
    /// `{"name", "webhook": {url, secret, ...} | "sns": {topic_arn}, ...}`
    /// or a list of them (docs/api.md#notification-channels).
    Apply {
        /// The file (`-`: standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete a channel (rules naming it skip it from then on).
    Delete {
        /// The channel's name.
        name: String,
    },
    /// Send a test notification on a channel, once, and say what it
    /// answered.
    Test {
        /// The channel's name.
        name: String,
    },
}
