//! Subcommands of `plantd analytics`: its rules and its results.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum AnalyticsCmd {
    /// Analytics rules: list, get, put, delete.
    Rules {
        /// What to do.
        #[command(subcommand)]
        cmd: AnalyticsRulesCmd,
    },
    /// A site's analytics results (the latest revision of each window).
    Results {
        /// The site.
        #[arg(long)]
        site: String,
        /// Only this rule's.
        #[arg(long)]
        rule: Option<String>,
        /// Only this key's (e.g. a topic).
        #[arg(long)]
        key: Option<String>,
        /// Windows starting at or after: RFC 3339, ms since the epoch, or
        /// a duration ago (30m, 2h).
        #[arg(long)]
        from: Option<String>,
        /// Windows starting at or before (as --from).
        #[arg(long)]
        to: Option<String>,
        /// At most this many windows.
        #[arg(long, default_value_t = plantd_cli::analytics::DEFAULT_RESULTS)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AnalyticsRulesCmd {
    /// Your organisation's analytics rules, one line each.
    List,
    /// Show one rule as JSON (what `put --file` takes).
    Get {
        /// The rule's name.
        name: String,
    },
    /// Create or replace a rule, from SQL or a JSON file
    /// (docs/api.md#analytics-rules).
    Put {
        /// The rule's name.
        name: String,
        /// The rule as SQL: SELECT avg(value) FROM "line1/+/temp" GROUP BY
        /// topic, TUMBLE(1m).
        #[arg(long, conflicts_with = "file")]
        sql: Option<String>,
        /// A JSON file: what `get` prints, or a rule in its JSON form
        /// (`-`: standard input).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// The sites it reads, comma-separated (default: every site; a
        /// rule at the edge needs them).
        #[arg(long, value_delimiter = ',')]
        sites: Vec<String>,
        /// Where it runs: cloud or edge.
        #[arg(long)]
        at: Option<String>,
        /// Store it paused.
        #[arg(long)]
        disabled: bool,
        /// Alert on its pattern and anomaly signals with this severity
        /// (info, warning, critical): the alert rule analytics-NAME.
        #[arg(long)]
        alert_severity: Option<String>,
        /// The alert's notification channels, comma-separated.
        #[arg(long, value_delimiter = ',')]
        alert_channels: Vec<String>,
    },
    /// Delete a rule (and its alert rule).
    Delete {
        /// The rule's name.
        name: String,
    },
}
