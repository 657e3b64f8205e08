//! Reading the store at start, in one write transaction that also removes
//! what expired while the broker was down and migrates a format 1 file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable as _, ReadableTableMetadata as _};
use tracing::info;

use super::codec::{self, DecodeError, Mark};
use super::writer::{clear_incoming, clear_seqs};
use super::{
    Counts, INCOMING, INFLIGHT, Loaded, LoadedSession, META, QUEUE, RETAINED, SESSIONS,
    STORE_FORMAT, StoreError, WILLS,
};
use crate::clock::Now;
use crate::message::Delivery;
use crate::session::OutFlight;

/// Format 1 state of one session (by index): in-flight messages and
/// incoming QoS 2 ids, to move into their tables.
type Legacy = (usize, Vec<(u16, OutFlight)>, Vec<u16>);

/// What is read of one session's messages before they are sorted into
/// in-flight and queued.
#[derive(Default)]
struct Messages {
    /// Queue records by sequence; `None` for an expired message.
    queue: BTreeMap<u64, Option<Delivery>>,
    /// In-flight marks by sequence.
    marks: BTreeMap<u64, Mark>,
    /// Incoming QoS 2 packet ids.
    incoming: HashSet<u16>,
    /// Highest sequence seen.
    max_seq: Option<u64>,
}

impl Messages {
    fn saw(&mut self, seq: u64) {
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
    }
}

/// Reads the whole store and removes what expired by `now` (the broker's
/// clock), in one transaction.
pub(super) fn load(db: &Database, path: &Path, now: Now) -> Result<(Loaded, Counts), StoreError> {
    let read_err = |e: redb::Error| StoreError::Read {
        path: path.to_owned(),
        source: e,
    };
    let rd = |e: redb::StorageError| read_err(e.into());
    let record_err = |table: &'static str, key: String, source: DecodeError| StoreError::Record {
        path: path.to_owned(),
        table,
        key,
        source,
    };
    let txn = db.begin_write().map_err(|e| read_err(e.into()))?;
    let mut loaded = Loaded::default();
    let counts;
    {
        let mut meta = txn.open_table(META).map_err(|e| read_err(e.into()))?;
        let format = meta.get("format").map_err(rd)?.map(|v| v.value());
        match format {
            None | Some(1) => {
                meta.insert("format", STORE_FORMAT).map_err(rd)?;
            }
            Some(STORE_FORMAT) => {}
            Some(found) => {
                return Err(StoreError::Format {
                    path: path.to_owned(),
                    found,
                });
            }
        }

        let mut retained = txn.open_table(RETAINED).map_err(|e| read_err(e.into()))?;
        let mut expired_retained = Vec::new();
        for entry in retained.iter().map_err(rd)? {
            let (k, v) = entry.map_err(rd)?;
            let topic = k.value().to_owned();
            match codec::decode_retained(v.value(), now) {
                Ok(Some(p)) => loaded.retained.push(p),
                Ok(None) => expired_retained.push(topic),
                Err(e) => return Err(record_err("retained", topic, e)),
            }
        }
        for topic in expired_retained {
            retained.remove(topic.as_str()).map_err(rd)?;
        }

        let mut sessions = txn.open_table(SESSIONS).map_err(|e| read_err(e.into()))?;
        let mut expired = Vec::new();
        let mut rewrite = Vec::new();
        // Format 1 kept in-flight messages and incoming QoS 2 ids in the
        // session record: they move to their tables.
        let mut legacy: Vec<Legacy> = Vec::new();
        for entry in sessions.iter().map_err(rd)? {
            let (k, v) = entry.map_err(rd)?;
            let client_id = k.value().to_owned();
            let mut state = codec::decode_session(v.value(), now)
                .map_err(|e| record_err("sessions", client_id.clone(), e))?;
            let mut changed = false;
            if state.disconnected_at_ms.is_none() {
                // Its client was connected when the broker stopped: the
                // session went offline now.
                state.disconnected_at_ms = Some(now.unix_ms);
                changed = true;
            }
            if state.deadline_ms().is_some_and(|d| d <= now.unix_ms) {
                expired.push(client_id);
                continue;
            }
            let outgoing = std::mem::take(&mut state.outgoing);
            let incoming = std::mem::take(&mut state.incoming_qos2);
            if !outgoing.is_empty() || !incoming.is_empty() {
                legacy.push((loaded.sessions.len(), outgoing, incoming));
                changed = true;
            }
            if changed {
                rewrite.push((client_id.clone(), state.clone()));
            }
            loaded.sessions.push(LoadedSession {
                client_id: Arc::from(client_id),
                state,
                queue: Vec::new(),
                next_seq: 0,
                will: None,
            });
        }
        for (client_id, state) in rewrite {
            let v = codec::encode_session(&state, now);
            sessions
                .insert(client_id.as_str(), v.as_slice())
                .map_err(rd)?;
        }
        for client_id in &expired {
            sessions.remove(client_id.as_str()).map_err(rd)?;
        }
        let by_id: HashMap<String, usize> = loaded
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (s.client_id.to_string(), i))
            .collect();
        let mut msgs: Vec<Messages> = (0..loaded.sessions.len())
            .map(|_| Messages::default())
            .collect();
        // Records of sessions that are gone (expired now or earlier).
        let mut orphans: HashSet<String> = HashSet::new();

        let mut wills = txn.open_table(WILLS).map_err(|e| read_err(e.into()))?;
        let mut dead_wills = Vec::new();
        for entry in wills.iter().map_err(rd)? {
            let (k, v) = entry.map_err(rd)?;
            let client_id = k.value().to_owned();
            let will = codec::decode_will(v.value(), now)
                .map_err(|e| record_err("wills", client_id.clone(), e))?;
            match (by_id.get(&client_id), will) {
                (Some(&i), Some(w)) => loaded.sessions[i].will = Some(w),
                (None, Some((w, _))) if expired.contains(&client_id) => {
                    // Its session expired while the broker was down: the
                    // will would have been published by then (its delay is
                    // never longer than the session's expiry).
                    loaded
                        .expired_wills
                        .push((Arc::from(client_id.as_str()), w));
                    dead_wills.push(client_id);
                }
                _ => dead_wills.push(client_id),
            }
        }
        for client_id in dead_wills {
            wills.remove(client_id.as_str()).map_err(rd)?;
        }

        let mut queue = txn.open_table(QUEUE).map_err(|e| read_err(e.into()))?;
        for entry in queue.iter().map_err(rd)? {
            let (k, v) = entry.map_err(rd)?;
            let (client_id, seq) = k.value();
            let Some(&i) = by_id.get(client_id) else {
                orphans.insert(client_id.to_owned());
                continue;
            };
            let mut d = codec::decode_queued(v.value(), now)
                .map_err(|e| record_err("queue", format!("{client_id}#{seq}"), e))?;
            if let Some(d) = &mut d {
                d.stored = Some(seq);
            }
            msgs[i].saw(seq);
            msgs[i].queue.insert(seq, d);
        }
        let mut inflight = txn.open_table(INFLIGHT).map_err(|e| read_err(e.into()))?;
        for entry in inflight.iter().map_err(rd)? {
            let (k, v) = entry.map_err(rd)?;
            let (client_id, seq) = k.value();
            let Some(&i) = by_id.get(client_id) else {
                orphans.insert(client_id.to_owned());
                continue;
            };
            let m = codec::decode_mark(v.value())
                .map_err(|e| record_err("inflight", format!("{client_id}#{seq}"), e))?;
            msgs[i].saw(seq);
            msgs[i].marks.insert(seq, m);
        }
        let mut incoming = txn.open_table(INCOMING).map_err(|e| read_err(e.into()))?;
        for entry in incoming.iter().map_err(rd)? {
            let (k, _) = entry.map_err(rd)?;
            let (client_id, pkid) = k.value();
            match by_id.get(client_id) {
                Some(&i) => {
                    msgs[i].incoming.insert(pkid);
                }
                None => {
                    orphans.insert(client_id.to_owned());
                }
            }
        }
        for client_id in &orphans {
            clear_seqs(&mut queue, client_id).map_err(|e| read_err(e.into()))?;
            clear_seqs(&mut inflight, client_id).map_err(|e| read_err(e.into()))?;
            clear_incoming(&mut incoming, client_id).map_err(|e| read_err(e.into()))?;
        }

        // Format 1 state moves to the tables, after the session's records.
        for (i, outgoing, ids) in legacy {
            let id = loaded.sessions[i].client_id.clone();
            let m = &mut msgs[i];
            let first = m.max_seq.map_or(0, |s| s + 1);
            for (seq, (pkid, f)) in (first..).zip(outgoing) {
                match f {
                    OutFlight::Publish(mut d) => {
                        let v = codec::encode_queued(&d, now);
                        queue.insert((&*id, seq), v.as_slice()).map_err(rd)?;
                        d.stored = Some(seq);
                        m.queue.insert(seq, Some(d));
                        let mark = codec::encode_mark(Mark::Sent(pkid));
                        inflight.insert((&*id, seq), mark.as_slice()).map_err(rd)?;
                        m.marks.insert(seq, Mark::Sent(pkid));
                    }
                    OutFlight::Released(_) => {
                        let mark = codec::encode_mark(Mark::Released(pkid));
                        inflight.insert((&*id, seq), mark.as_slice()).map_err(rd)?;
                        m.marks.insert(seq, Mark::Released(pkid));
                    }
                }
                m.saw(seq);
            }
            for pkid in ids {
                incoming.insert((&*id, pkid), 0u8).map_err(rd)?;
                m.incoming.insert(pkid);
            }
        }

        // Sort each session's messages: marked ones were in flight (in send
        // order), the rest are queued; expired ones are removed.
        for (s, m) in loaded.sessions.iter_mut().zip(msgs) {
            let id = s.client_id.clone();
            let Messages {
                queue: mut q,
                marks,
                incoming: ids,
                max_seq,
            } = m;
            s.next_seq = max_seq.map_or(0, |x| x + 1);
            let mut ids: Vec<u16> = ids.into_iter().collect();
            ids.sort_unstable();
            s.state.incoming_qos2 = ids;
            for (seq, mark) in marks {
                match mark {
                    Mark::Sent(pkid) => match q.remove(&seq) {
                        Some(Some(d)) => s.state.outgoing.push((pkid, OutFlight::Publish(d))),
                        _ => {
                            // Expired (or its record is missing): forget it.
                            queue.remove((&*id, seq)).map_err(rd)?;
                            inflight.remove((&*id, seq)).map_err(rd)?;
                        }
                    },
                    Mark::Released(pkid) => {
                        q.remove(&seq);
                        s.state
                            .outgoing
                            .push((pkid, OutFlight::Released(Some(seq))));
                    }
                }
            }
            for (seq, d) in q {
                match d {
                    Some(d) => s.queue.push(d),
                    None => {
                        queue.remove((&*id, seq)).map_err(rd)?;
                    }
                }
            }
        }
        if !expired.is_empty() {
            info!(path = %path.display(), sessions = expired.len(), "dropped sessions that expired while the broker was down");
        }
        counts = Counts {
            sessions: sessions.len().map_err(rd)?,
            retained: retained.len().map_err(rd)?,
            queued: queue.len().map_err(rd)?,
            inflight: inflight.len().map_err(rd)?,
            wills: wills.len().map_err(rd)?,
        };
    }
    txn.commit().map_err(|e| read_err(e.into()))?;
    Ok((loaded, counts))
}
