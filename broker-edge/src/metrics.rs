//! Broker statistics as lock-free counters, rendered for Prometheus
//! (`/metrics`) and published under `$SYS/broker/`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a message was not delivered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session queue was full (slow or offline subscriber).
    QueueFull,
    /// The message expiry interval passed before delivery.
    Expired,
    /// Larger than the subscriber's Maximum Packet Size.
    TooLarge,
    /// QoS 0 message for an offline session (not queued by configuration).
    Offline,
    /// A PUBLISH the client's token or the rules do not allow (v5 clients
    /// get 0x87; 3.1.1 clients are acknowledged and the message dropped),
    /// or a queued delivery whose topic the subscriber may no longer read
    /// (its permissions narrowed after the message was routed).
    NotAuthorized,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::Expired,
        DropReason::TooLarge,
        DropReason::Offline,
        DropReason::NotAuthorized,
    ];

    fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Expired => "expired",
            DropReason::TooLarge => "packet_too_large",
            DropReason::Offline => "offline_qos0",
            DropReason::NotAuthorized => "not_authorized",
        }
    }
}

/// The listener a socket arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// MQTT over TCP (`--mqtt-listen`).
    Tcp,
    /// MQTT over TLS (`--tls-listen`).
    Tls,
    /// MQTT over WebSocket (`--ws-listen`).
    Ws,
    /// MQTT over secure WebSocket (`--wss-listen`).
    Wss,
}

impl Listener {
    const ALL: [Listener; 4] = [Listener::Tcp, Listener::Tls, Listener::Ws, Listener::Wss];

    /// The `listener` label value.
    pub fn label(self) -> &'static str {
        match self {
            Listener::Tcp => "tcp",
            Listener::Tls => "tls",
            Listener::Ws => "ws",
            Listener::Wss => "wss",
        }
    }
}

/// Every counter and gauge the broker keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connected clients (gauge).
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused (limit, bad CONNECT, authentication).
    pub connections_refused: AtomicU64,
    /// Sessions, connected or not (gauge).
    pub sessions: AtomicU64,
    /// Subscriptions across sessions (gauge).
    pub subscriptions: AtomicU64,
    /// Retained messages (gauge).
    pub retained: AtomicU64,
    /// Messages queued in session mailboxes (gauge).
    pub queued: AtomicU64,
    /// PUBLISH packets received, by QoS.
    pub messages_in: [AtomicU64; 3],
    /// PUBLISH packets sent, by QoS.
    pub messages_out: [AtomicU64; 3],
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Messages not delivered, by [`DropReason`].
    dropped: [AtomicU64; 5],
    /// Connections closed for malformed or protocol-violating packets.
    pub protocol_errors: AtomicU64,
    /// Sessions in the session store (gauge; 0 without `--data-dir`).
    pub store_sessions: AtomicU64,
    /// Retained messages in the session store (gauge).
    pub store_retained: AtomicU64,
    /// QoS 1/2 messages of persistent sessions in the session store,
    /// queued or in flight (gauge).
    pub store_queued: AtomicU64,
    /// Of those, the ones sent and not yet acknowledged (gauge).
    pub store_inflight: AtomicU64,
    /// Wills waiting out their delay in the session store (gauge).
    pub store_wills: AtomicU64,
    /// Session store write transactions committed.
    pub store_flushes: AtomicU64,
    /// Session store write transactions that failed (their changes are
    /// lost on restart).
    pub store_write_errors: AtomicU64,
    /// Sockets accepted, by [`Listener`].
    accepted: [AtomicU64; 4],
    /// Successful reloads of the TLS certificate, key and client CA.
    pub tls_reloads: AtomicU64,
    /// Failed reloads (the previous certificate stayed in force).
    pub tls_reload_failures: AtomicU64,
    /// 1 when the last reload failed, else 0 (gauge).
    pub tls_reload_failed: AtomicU64,
}

impl Metrics {
    /// Counts one socket accepted on `listener`.
    pub fn accepted(&self, listener: Listener) {
        self.accepted[listener as usize].fetch_add(1, Relaxed);
    }

    /// Sockets accepted so far on `listener`.
    pub fn accepted_count(&self, listener: Listener) -> u64 {
        self.accepted[listener as usize].load(Relaxed)
    }

    /// Counts one undelivered message.
    pub fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
    }

    /// Undelivered messages so far for `reason`.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    /// Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048);
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one(
            "plantd_edge_connections",
            "gauge",
            "Connected MQTT clients.",
            self.connections.load(Relaxed),
        );
        one(
            "plantd_edge_connections_total",
            "counter",
            "MQTT connections accepted.",
            self.connections_total.load(Relaxed),
        );
        one(
            "plantd_edge_connections_refused_total",
            "counter",
            "MQTT connections refused.",
            self.connections_refused.load(Relaxed),
        );
        one(
            "plantd_edge_sessions",
            "gauge",
            "Sessions, connected or not.",
            self.sessions.load(Relaxed),
        );
        one(
            "plantd_edge_subscriptions",
            "gauge",
            "Subscriptions.",
            self.subscriptions.load(Relaxed),
        );
        one(
            "plantd_edge_retained_messages",
            "gauge",
            "Retained messages.",
            self.retained.load(Relaxed),
        );
        one(
            "plantd_edge_queued_messages",
            "gauge",
            "Messages waiting in session queues.",
            self.queued.load(Relaxed),
        );
        one(
            "plantd_edge_bytes_received_total",
            "counter",
            "Bytes read from clients.",
            self.bytes_in.load(Relaxed),
        );
        one(
            "plantd_edge_bytes_sent_total",
            "counter",
            "Bytes written to clients.",
            self.bytes_out.load(Relaxed),
        );
        one(
            "plantd_edge_protocol_errors_total",
            "counter",
            "Connections closed for malformed or protocol-violating packets.",
            self.protocol_errors.load(Relaxed),
        );
        one(
            "plantd_edge_session_store_sessions",
            "gauge",
            "Persistent sessions in the session store.",
            self.store_sessions.load(Relaxed),
        );
        one(
            "plantd_edge_session_store_retained",
            "gauge",
            "Retained messages in the session store.",
            self.store_retained.load(Relaxed),
        );
        one(
            "plantd_edge_session_store_queued",
            "gauge",
            "QoS 1/2 messages of persistent sessions in the session store (queued or in flight).",
            self.store_queued.load(Relaxed),
        );
        one(
            "plantd_edge_session_store_inflight",
            "gauge",
            "Stored QoS 1/2 messages sent to their client and not yet acknowledged.",
            self.store_inflight.load(Relaxed),
        );
        one(
            "plantd_edge_session_store_wills",
            "gauge",
            "Wills waiting out their delay in the session store.",
            self.store_wills.load(Relaxed),
        );
        one(
            "plantd_edge_session_store_flushes_total",
            "counter",
            "Session store write transactions committed.",
            self.store_flushes.load(Relaxed),
        );
        one(
            "plantd_edge_session_store_write_errors_total",
            "counter",
            "Session store write transactions that failed.",
            self.store_write_errors.load(Relaxed),
        );
        for (name, help, arr) in [
            (
                "plantd_edge_messages_received_total",
                "PUBLISH packets received.",
                &self.messages_in,
            ),
            (
                "plantd_edge_messages_sent_total",
                "PUBLISH packets sent.",
                &self.messages_out,
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for (q, v) in arr.iter().enumerate() {
                let _ = writeln!(s, "{name}{{qos=\"{q}\"}} {}", v.load(Relaxed));
            }
        }
        let name = "plantd_edge_messages_dropped_total";
        let _ = writeln!(
            s,
            "# HELP {name} Messages not delivered to a subscriber.\n# TYPE {name} counter"
        );
        for r in DropReason::ALL {
            let _ = writeln!(
                s,
                "{name}{{reason=\"{}\"}} {}",
                r.label(),
                self.dropped_count(r)
            );
        }
        let name = "plantd_edge_sockets_accepted_total";
        let _ = writeln!(
            s,
            "# HELP {name} Sockets accepted, by listener.\n# TYPE {name} counter"
        );
        for l in Listener::ALL {
            let _ = writeln!(
                s,
                "{name}{{listener=\"{}\"}} {}",
                l.label(),
                self.accepted_count(l)
            );
        }
        let name = "plantd_edge_tls_reloads_total";
        let _ = writeln!(
            s,
            "# HELP {name} Reloads of the TLS certificate, key and client CA (SIGHUP).\n# TYPE {name} counter\n{name}{{result=\"ok\"}} {}\n{name}{{result=\"error\"}} {}",
            self.tls_reloads.load(Relaxed),
            self.tls_reload_failures.load(Relaxed)
        );
        let name = "plantd_edge_tls_reload_failed";
        let _ = writeln!(
            s,
            "# HELP {name} 1 when the last TLS reload failed (the previous certificate is in use).\n# TYPE {name} gauge\n{name} {}",
            self.tls_reload_failed.load(Relaxed)
        );
        s
    }
}
