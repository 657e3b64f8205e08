//! Subcommands over the organisation in the identity service: its sites
//! (`plantd sites`) and its audit trail (`plantd audit verify`).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum SitesCmd {
    /// Your organisation's sites (the superadmin: every site, or `--org`'s).
    List {
        /// Only this organisation's (another than yours: superadmin only).
        #[arg(long)]
        org: Option<String>,
    },
    /// Register a site to your organisation (ids are global: exit 6 when
    /// taken).
    Create {
        /// The site id: 1-64 of A-Z a-z 0-9 _ - (the `<site>` of its subjects).
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// What and where it is.
        #[arg(long)]
        description: Option<String>,
        /// A label `key=value` (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Register it to another organisation (superadmin only).
        #[arg(long)]
        org: Option<String>,
    },
    /// Show one site.
    Get {
        /// The site id.
        id: String,
    },
    /// Delete a site: its devices get no more tokens, its edge admits
    /// nobody new after a restart.
    Delete {
        /// The site id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// Check the organisation's hash chain: exit 0 when it is intact, 1
    /// with the first broken record when a record was altered, removed,
    /// inserted or forged.
    Verify,
}
