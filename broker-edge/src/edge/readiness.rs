//! What the edge adds to the broker's HTTP endpoints: `/readyz` fails while
//! the journal is full or the uplink makes no progress; `/metrics` adds the
//! journal's, the uplink's and the downlink's figures, the analytics
//! engine's, the site owner's watch and certificate login.

use std::sync::Arc;

use plantd_bridge::{DownlinkStatus, UplinkState, UplinkStatus};
use plantd_journal::Journal;
use tokio::sync::watch;

use crate::auth::certificates::Directory;
use crate::http::HttpExtras;

/// The figures of the site owner's watch and of certificate login, for
/// `/metrics`.
pub(super) struct AuthFigures {
    /// Owner changes seen while running.
    pub(super) owner: Arc<crate::owner::watch::Stats>,
    /// Certificate logins, when on.
    pub(super) certificates: Option<Arc<Directory>>,
}

pub(super) fn readiness(
    journal: Journal,
    status: watch::Receiver<UplinkStatus>,
    downlink: watch::Receiver<DownlinkStatus>,
    analytics: Option<Arc<crate::analytics::Stats>>,
    auth: AuthFigures,
) -> HttpExtras {
    let ready_journal = journal.clone();
    let ready_status = status.clone();
    let ready = Arc::new(move || {
        let s = ready_status.borrow().clone();
        let stats = ready_journal.stats();
        if stats.blocked {
            return Err("journal full: publishers are held back".to_owned());
        }
        if !s.is_healthy() {
            return Err(format!(
                "uplink {}: {}",
                s.state.as_str(),
                s.last_error.unwrap_or_else(|| "no progress".into())
            ));
        }
        Ok(())
    });
    let metrics = Arc::new(move || {
        use std::fmt::Write as _;
        let st = journal.stats();
        let s = status.borrow().clone();
        let mut out = String::with_capacity(2048);
        let mut one = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "plantd_journal_bytes",
            "gauge",
            "Bytes in journal segments.",
            st.bytes as f64,
        );
        one(
            "plantd_journal_max_bytes",
            "gauge",
            "Journal size limit (0: none).",
            st.max_bytes as f64,
        );
        one(
            "plantd_journal_records_unacked",
            "gauge",
            "Journaled records not yet acknowledged by JetStream.",
            st.unacked() as f64,
        );
        one(
            "plantd_journal_last_seq",
            "gauge",
            "Newest journal sequence.",
            st.last_seq as f64,
        );
        one(
            "plantd_journal_appends_total",
            "counter",
            "Records appended since start.",
            st.appends as f64,
        );
        one(
            "plantd_journal_fsyncs_total",
            "counter",
            "fsync calls since start.",
            st.fsyncs as f64,
        );
        one(
            "plantd_journal_bytes_written_total",
            "counter",
            "Bytes written to segments since start.",
            st.bytes_written as f64,
        );
        one(
            "plantd_journal_payload_bytes_total",
            "counter",
            "Payload bytes appended since start.",
            st.payload_bytes as f64,
        );
        one(
            "plantd_journal_blocked",
            "gauge",
            "1 while publishers are held back by a full journal.",
            f64::from(u8::from(st.blocked)),
        );
        let _ = writeln!(
            out,
            "# HELP plantd_dropped_total Messages dropped, by reason.\n# TYPE plantd_dropped_total counter\nplantd_dropped_total{{reason=\"journal_overflow\"}} {}\nplantd_dropped_total{{reason=\"journal_age\"}} {}\nplantd_dropped_total{{reason=\"undeliverable\"}} {}\nplantd_dropped_total{{reason=\"log_ship\"}} {}",
            st.dropped_overflow,
            st.dropped_age,
            s.undeliverable,
            plantd_shared::log_ship::dropped()
        );
        let up = |state: UplinkState| f64::from(u8::from(s.state == state));
        let _ = writeln!(
            out,
            "# HELP plantd_uplink_state Uplink state (1 for the current one).\n# TYPE plantd_uplink_state gauge"
        );
        for state in [
            UplinkState::Starting,
            UplinkState::Up,
            UplinkState::Down,
            UplinkState::Stalled,
            UplinkState::Refused,
            UplinkState::Stopped,
        ] {
            let _ = writeln!(
                out,
                "plantd_uplink_state{{state=\"{}\"}} {}",
                state.as_str(),
                up(state)
            );
        }
        let mut one = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "plantd_uplink_published_total",
            "counter",
            "Publishes sent to JetStream (including resends).",
            s.published as f64,
        );
        one(
            "plantd_uplink_acked_total",
            "counter",
            "Acknowledgements from JetStream.",
            s.acked as f64,
        );
        one(
            "plantd_uplink_resends_total",
            "counter",
            "Records sent again after a failure.",
            s.resends as f64,
        );
        one(
            "plantd_uplink_already_stored_total",
            "counter",
            "Records not sent again because JetStream already held them when a connection started.",
            s.already_stored as f64,
        );
        one(
            "plantd_uplink_duplicates_total",
            "counter",
            "Resends JetStream recognised as duplicates.",
            s.duplicates as f64,
        );
        one(
            "plantd_uplink_reordered_total",
            "counter",
            "Publishes stored after an earlier one on the same topic had been refused (topic out of order in the stream).",
            s.reordered as f64,
        );
        one(
            "plantd_uplink_failures_total",
            "counter",
            "Uplink failures.",
            s.failures as f64,
        );
        one(
            "plantd_uplink_in_flight",
            "gauge",
            "Records awaiting acknowledgement.",
            s.in_flight as f64,
        );
        let since = s
            .last_ack
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(-1.0);
        one(
            "plantd_uplink_seconds_since_last_ack",
            "gauge",
            "Seconds since the last acknowledgement (-1: none yet).",
            since,
        );
        downlink_metrics(&mut out, &downlink.borrow());
        if let Some(a) = &analytics {
            a.prometheus(&mut out);
        }
        auth.owner.prometheus(&mut out);
        if let Some(c) = &auth.certificates {
            c.prometheus(&mut out);
        }
        out
    });
    HttpExtras {
        ready: Some(ready),
        metrics: Some(metrics),
    }
}

/// The downlink's figures in the Prometheus text format: held commands
/// (a gauge) and what became of commands (counters).
fn downlink_metrics(out: &mut String, d: &DownlinkStatus) {
    use std::fmt::Write as _;
    let mut one = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    one(
        "plantd_downlink_attached",
        "gauge",
        "1 while the command consumer is attached.",
        u64::from(d.attached),
    );
    one(
        "plantd_downlink_pending",
        "gauge",
        "Commands held: nobody subscribes to their topic yet, or they wait behind one on the same topic.",
        d.pending,
    );
    one(
        "plantd_downlink_delivered_total",
        "counter",
        "Commands the broker accepted.",
        d.delivered,
    );
    one(
        "plantd_downlink_expired_total",
        "counter",
        "Commands dropped because their time to live ran out.",
        d.expired,
    );
    one(
        "plantd_downlink_undelivered_total",
        "counter",
        "Commands without a time to live dropped because nobody subscribed within the hold.",
        d.undelivered,
    );
    one(
        "plantd_downlink_cancelled_total",
        "counter",
        "Held commands cancelled on request.",
        d.cancelled,
    );
    one(
        "plantd_downlink_invalid_total",
        "counter",
        "Commands dropped because their subject or headers were malformed.",
        d.invalid,
    );
    one(
        "plantd_downlink_refused_total",
        "counter",
        "Offers of a command the broker refused (every subscriber's queue full).",
        d.refused,
    );
}
