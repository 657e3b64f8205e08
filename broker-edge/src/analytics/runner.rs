//! The engine's task: one [`Engine`] for the site, reading its readings
//! from the journal, moved along by the wall clock, rebuilt when the rules
//! change, checkpointed to `<data-dir>/`[`STATE_FILE`].
//!
//! Exactly once at the edge, across a SIGKILL: the checkpoint records the
//! engine's state with the journal sequence of the last record applied,
//! and is written only once the results of those records are durable in
//! the journal. At start the engine reads the journal on from that
//! sequence: the readings applied after the checkpoint are applied again,
//! then the live ones follow in the same reader (no gap, nothing twice);
//! the results this replay computes that were journaled before the crash
//! are recognised by their [`Output::id`] and not journaled again
//! ([`super::replay::journaled_results`]). The journal keeps the records
//! after the checkpoint even once the uplink has them
//! ([`plantd_journal::Journal::keep_from`]); only its size and age limits can delete them
//! (logged: those readings are not analysed). Each reading's event time
//! is its journaled receive time and its engine sequence its journal
//! sequence, so a replay computes what the first run did. The wall-clock
//! tick moves the engine only when it has read every durable record, to
//! [`SETTLE`] before now. See `docs/decisions/0031-edge-analytics-exactly-once.md`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use plantd_analytics::{Engine, EngineError, Event, Output, Rule, State};
use plantd_journal::{JournalError, Reader, Record};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::feed::{Stats, now_ms};
use super::replay::{self, Entry};
use super::results::Results;
use super::rules::Rules;

/// The checkpoint under `--data-dir`.
pub const STATE_FILE: &str = "analytics-state.json";

/// How long a shutdown waits for the last results and checkpoint.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Journal records applied per turn at most (one batch of results, one
/// checkpoint).
const BATCH: usize = 1024;

/// How far behind the wall clock the tick moves the engine: a reading is
/// stamped when accepted and read once durable, so a tick to "now" could
/// close a window a reading still on its way to the disk belongs to (and a
/// replay, which reads it first, would compute that window otherwise).
pub const SETTLE: Duration = Duration::from_secs(1);

/// The checkpoint file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// The journal sequence of the last record applied; `None` in a
    /// checkpoint written before the engine read the journal.
    #[serde(default)]
    journal_seq: Option<u64>,
    /// The organisation whose rules the state belongs to (`None` in a
    /// checkpoint written before the edge followed its owner, or before
    /// any rule ran).
    #[serde(default)]
    org: Option<String>,
    /// The engine's state.
    state: State,
}

fn empty() -> State {
    State {
        version: State::VERSION,
        rules: Vec::new(),
    }
}

/// Where the engine will read on from after the checkpoint in
/// `data_dir` (`None`: no usable checkpoint). The edge opens its journal
/// holding the records from there ([`plantd_journal::Options::keep_from`]),
/// so none the engine has not applied is deleted before it starts.
pub fn resume_from(data_dir: &Path) -> Option<u64> {
    load(&data_dir.join(STATE_FILE)).and_then(|c| c.journal_seq.map(|s| s + 1))
}

fn load(path: &Path) -> Option<Checkpoint> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the analytics checkpoint; starting afresh");
            return None;
        }
    };
    match serde_json::from_slice::<Checkpoint>(&bytes) {
        Ok(c) if c.state.version == State::VERSION && c.journal_seq.is_some() => Some(c),
        Ok(c) => {
            warn!(path = %path.display(), version = c.state.version, "analytics checkpoint of another format; starting afresh");
            None
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "analytics checkpoint malformed; starting afresh");
            None
        }
    }
}

/// The engine task's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the checkpoint lives.
    pub state_file: PathBuf,
    /// How often the engine's time moves to the wall clock.
    pub tick: Duration,
    /// How often the state is checkpointed without results.
    pub checkpoint_every: Duration,
}

/// The task.
pub struct Runner {
    settings: Settings,
    engine: Engine,
    /// The journal sequence of the last record applied.
    journal_seq: u64,
    /// Whether the checkpoint had a position (else the engine starts at
    /// the journal's end).
    resumed: bool,
    rules: watch::Receiver<Rules>,
    results: Results,
    stats: Arc<Stats>,
    /// Records applied since the last checkpoint.
    dirty: bool,
    /// Ids of results journaled after the checkpoint, before the restart:
    /// computed again by the replay, not journaled again.
    journaled: HashSet<String>,
    /// The organisation whose rules the engine's state belongs to: rules of
    /// another one (the site changed hands) start from nothing, so no
    /// window of one organisation's readings ends up in another's results.
    org: Option<String>,
}

/// The organisation the rules belong to (the follower hands over the rules
/// of one organisation at a time); `None` when there is none.
fn owner_of(rules: &Rules) -> Option<&str> {
    rules.values().next().map(|r| r.org.as_str())
}

/// `state`, or nothing when it was built for `was` and the rules are now
/// `now`'s (logged).
fn for_owner(state: State, was: Option<&str>, now: Option<&str>) -> State {
    match (was, now) {
        (Some(was), Some(now)) if was != now => {
            info!(previous_org = %was, org = %now, "the site changed hands: the analytics windows start afresh");
            empty()
        }
        _ => state,
    }
}

/// The rules the engine runs: each valid rule once by name, in key order.
fn compile(rules: &Rules) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    for (key, stored) in rules.iter() {
        if out.iter().any(|r| r.name == stored.rule.name) {
            warn!(rule = %key, name = %stored.rule.name, "two analytics rules share a name; the second is not run");
            continue;
        }
        out.push(stored.rule.clone());
    }
    out
}

/// An engine for `rules` continuing from `state` as far as it can: the
/// state of a rule whose definition changed is forgotten (that rule starts
/// afresh), a rule the engine refuses is left out (logged).
fn build(mut rules: Vec<Rule>, mut state: State) -> Engine {
    loop {
        match Engine::restore(rules.clone(), state.clone()) {
            Ok(engine) => return engine,
            Err(EngineError::RuleChanged(name)) => {
                info!(rule = %name, "analytics rule changed: its windows start afresh");
                state.forget(&name);
            }
            Err(EngineError::Rule { name, error }) => {
                warn!(rule = %name, %error, "analytics rule refused by the engine; not run");
                rules.retain(|r| r.name != name);
            }
            Err(EngineError::Duplicate(name)) => {
                warn!(rule = %name, "two analytics rules share a name; not run");
                rules.retain(|r| r.name != name);
            }
        }
    }
}

impl Runner {
    /// A runner continuing from the checkpoint in `settings.state_file`
    /// (none, or unreadable: from nothing and from the journal's end,
    /// logged).
    pub fn new(
        settings: Settings,
        rules: watch::Receiver<Rules>,
        results: Results,
        stats: Arc<Stats>,
    ) -> Self {
        let saved = load(&settings.state_file);
        let resumed = saved.is_some();
        let (journal_seq, saved_org, state) = saved.map_or_else(
            || (results.journal.durable(), None, empty()),
            |c| (c.journal_seq.unwrap_or(0), c.org, c.state),
        );
        let current = rules.borrow().clone();
        let org = owner_of(&current).map(str::to_owned);
        let state = for_owner(state, saved_org.as_deref(), org.as_deref());
        let engine = build(compile(&current), state);
        stats.rules.store(current.len() as u64, Ordering::Relaxed);
        Self {
            settings,
            engine,
            journal_seq,
            resumed,
            rules,
            results,
            stats,
            dirty: false,
            journaled: HashSet::new(),
            org: org.or(saved_org),
        }
    }

    /// Where reading starts: after the checkpoint, with the results the
    /// journal already holds from there noted. Without a checkpoint: the
    /// journal's end, checkpointed at once so a crash before the first
    /// results still resumes from there.
    async fn start(&mut self) -> Reader {
        let journal = self.results.journal.clone();
        let end = journal.durable();
        if self.journal_seq > end {
            warn!(
                checkpoint = self.journal_seq,
                journal_end = end,
                "the analytics checkpoint is ahead of the journal (journal replaced?): reading on from the journal's end"
            );
            self.journal_seq = end;
        }
        if self.resumed {
            self.journaled = replay::journaled_results(&journal, self.journal_seq + 1, end);
            info!(
                from = self.journal_seq + 1,
                to = end,
                journaled_results = self.journaled.len(),
                "analytics engine replays the journal after its checkpoint"
            );
        }
        journal.keep_from(Some(self.journal_seq + 1));
        if !self.resumed {
            self.checkpoint().await;
        }
        journal.reader(self.journal_seq + 1)
    }

    /// Runs until `stop`, then applies what is durable, publishes and
    /// checkpoints.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut reader = self.start().await;
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save = tokio::time::interval(self.settings.checkpoint_every);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        save.tick().await;
        let mut out = Vec::new();
        let mut following = true;
        let mut skipped = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = self.rules.changed(), if following => match changed {
                    Ok(()) => self.rebuild(),
                    // The follower stopped: keep the rules we have.
                    Err(_) => following = false,
                },
                next = reader.next() => match next {
                    Ok(record) => {
                        self.apply(&record, &mut out);
                        self.read_more(&mut reader, &mut out);
                    }
                    Err(JournalError::Closed) => break,
                    Err(e) => Self::unreadable(&mut reader, &e),
                },
                _ = tick.tick() => if reader.position() > self.results.journal.durable() {
                    let settle = i64::try_from(SETTLE.as_millis()).unwrap_or(0);
                    out.extend(self.engine.advance(now_ms() - settle));
                },
                _ = save.tick() => if self.dirty {
                    self.checkpoint().await;
                },
            }
            if reader.skipped() > skipped {
                warn!(
                    lost = reader.skipped() - skipped,
                    "journal records deleted (size or age limit) before the analytics engine read them: those readings are not analysed"
                );
                skipped = reader.skipped();
            }
            if !out.is_empty() {
                // A full journal (policy `block`) holds the results back;
                // a shutdown waits for it [`SHUTDOWN_WAIT`] at most.
                let gone = async {
                    stop.cancelled().await;
                    tokio::time::sleep(SHUTDOWN_WAIT).await;
                };
                tokio::select! {
                    () = self.emit(&mut out) => {}
                    () = gone => {
                        warn!("shutdown while the journal is full: the last analytics results are not journaled and the state is not checkpointed (the previous checkpoint stands; they are computed again at start)");
                        return;
                    }
                }
            }
        }
        // Durable before the shutdown: applied now rather than replayed.
        self.read_more(&mut reader, &mut out);
        let last = async {
            if !out.is_empty() {
                self.emit(&mut out).await;
            }
            self.checkpoint().await;
        };
        if tokio::time::timeout(SHUTDOWN_WAIT, last).await.is_err() {
            warn!(wait = ?SHUTDOWN_WAIT, "the journal did not take the last analytics results at shutdown (full?); the previous checkpoint stands");
        }
    }

    /// Applies what is durable now, a batch at most.
    fn read_more(&mut self, reader: &mut Reader, out: &mut Vec<Output>) {
        for _ in 1..BATCH {
            match reader.try_next() {
                Ok(Some(record)) => self.apply(&record, out),
                Ok(None) => return,
                Err(e) => Self::unreadable(reader, &e),
            }
        }
    }

    fn unreadable(reader: &mut Reader, e: &JournalError) {
        warn!(seq = reader.position(), error = %e, "journal record unreadable; not analysed");
        reader.seek(reader.position() + 1);
    }

    /// Applies one journal record (a reading; anything else only moves
    /// the position).
    fn apply(&mut self, record: &Record, out: &mut Vec<Output>) {
        if let Entry::Reading {
            topic,
            payload,
            received_at,
        } = replay::entry(record)
        {
            let event = Event {
                topic: &topic,
                payload: &payload,
                received_at,
                stream_seq: record.seq,
            };
            self.engine.process_into(&event, out);
            self.stats.processed.fetch_add(1, Ordering::Relaxed);
        }
        self.journal_seq = record.seq;
        self.dirty = true;
    }

    /// Results out (those journaled before a restart left out), then the
    /// checkpoint that says they are out.
    async fn emit(&mut self, out: &mut Vec<Output>) {
        if !self.journaled.is_empty() {
            out.retain(|o| !self.journaled.remove(&o.id()));
        }
        self.results.publish(out).await;
        out.clear();
        self.checkpoint().await;
    }

    /// The engine for the new rules, keeping the state of the unchanged.
    fn rebuild(&mut self) {
        let current = self.rules.borrow_and_update().clone();
        let now = owner_of(&current).map(str::to_owned);
        let state = for_owner(
            self.engine.checkpoint(),
            self.org.as_deref(),
            now.as_deref(),
        );
        if now.is_some() {
            self.org = now;
        }
        self.engine = build(compile(&current), state);
        self.stats
            .rules
            .store(current.len() as u64, Ordering::Relaxed);
        info!(rules = current.len(), "analytics engine runs the new rules");
    }

    async fn checkpoint(&mut self) {
        let saved = Checkpoint {
            journal_seq: Some(self.journal_seq),
            org: self.org.clone(),
            state: self.engine.checkpoint(),
        };
        let bytes = match serde_json::to_vec(&saved) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot encode the analytics checkpoint");
                return;
            }
        };
        let path = self.settings.state_file.clone();
        let written =
            tokio::task::spawn_blocking(move || super::write_atomically(&path, &bytes)).await;
        match written {
            Ok(Ok(())) => {
                self.dirty = false;
                self.results.journal.keep_from(Some(self.journal_seq + 1));
            }
            Ok(Err(e)) => {
                warn!(path = %self.settings.state_file.display(), error = %e, "cannot write the analytics checkpoint");
            }
            Err(e) => warn!(error = %e, "analytics checkpoint task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plantd_analytics::StoredRule;

    fn rule(name: &str, window: &str) -> Rule {
        Rule::from_sql(
            name,
            &format!(r#"SELECT avg(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE({window})"#),
        )
        .expect("rule")
    }

    fn record(topic: &str, payload: Vec<u8>) -> bytes::Bytes {
        plantd_bridge::UplinkMessage {
            topic: topic.to_owned(),
            payload: payload.into(),
            qos: 1,
            retain: false,
            received_ms: 1_000,
            client_id: "plc".to_owned(),
            payload_format: None,
            message_expiry: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }
        .encode()
        .expect("encode")
    }

    /// The crash of gap 2: readings after the checkpoint and the result
    /// they caused are both in the journal, the checkpoint is older. The
    /// restarted engine replays the readings, computes the result again
    /// and does not journal it a second time.
    #[tokio::test]
    async fn a_result_journaled_before_the_crash_is_not_journaled_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let (journal, _) = plantd_journal::Journal::open(
            dir.path().join("journal"),
            plantd_journal::Options::default(),
        )
        .expect("journal");
        let rule = rule("avg", "1s");
        let mut reference = Engine::new(vec![rule.clone()]).expect("engine");
        let mut first = Vec::new();
        // Three readings of one window (all received at 1 000 ms, as
        // journaled), closed by the engine's time moving on.
        for value in [21, 22, 23] {
            let payload = format!("{value}").into_bytes();
            let seq = journal
                .append(record("line1/m1/temp", payload.clone()))
                .await
                .expect("append");
            first.extend(reference.process(&Event {
                topic: "line1/m1/temp",
                payload: &payload,
                received_at: 1_000,
                stream_seq: seq,
            }));
        }
        first.extend(reference.advance(5_000));
        assert_eq!(first.len(), 1, "{first:?}");
        let before = first[0].clone();
        let body = serde_json::to_vec(&before).expect("json");
        journal
            .append(record(&format!("$plantd/agg/avg/{}", before.key), body))
            .await
            .expect("append result");
        let state_file = dir.path().join(STATE_FILE);
        let saved = Checkpoint {
            journal_seq: Some(0),
            org: Some("acme".into()),
            state: Engine::new(vec![rule.clone()])
                .expect("engine")
                .checkpoint(),
        };
        super::super::write_atomically(&state_file, &serde_json::to_vec(&saved).expect("json"))
            .expect("checkpoint");

        let stored = StoredRule {
            org: "acme".into(),
            sites: vec!["plant-1".into()],
            at: plantd_analytics::Placement::Edge,
            enabled: true,
            rule: rule.clone(),
            source: plantd_analytics::Source::Json,
            updated_by: "u".into(),
            updated_at: "now".into(),
        };
        let rules: Rules = Arc::new([("acme.avg".to_owned(), stored)].into_iter().collect());
        let (_tx, rx) = watch::channel(rules);
        let stats = Arc::new(Stats::default());
        let (router, _) = tokio::sync::mpsc::channel(1);
        let results = Results {
            journal: journal.clone(),
            broker: crate::inject::BrokerHandle::new(router.downgrade()),
            stats: stats.clone(),
        };
        let mut runner = Runner::new(
            Settings {
                state_file: state_file.clone(),
                tick: Duration::from_secs(3600),
                checkpoint_every: Duration::from_secs(3600),
            },
            rx,
            results,
            stats.clone(),
        );
        let mut reader = runner.start().await;
        assert_eq!(
            runner.journaled.len(),
            1,
            "the result found after the checkpoint"
        );
        let mut out = Vec::new();
        runner.read_more(&mut reader, &mut out);
        out.extend(runner.engine.advance(5_000));
        assert_eq!(
            out,
            vec![before.clone()],
            "the replay computes the same result"
        );
        runner.emit(&mut out).await;
        assert_eq!(
            stats.results.load(Ordering::Relaxed),
            0,
            "not journaled again"
        );
        assert_eq!(journal.durable(), 4, "nothing appended");
        let saved = load(&state_file).expect("checkpoint");
        assert_eq!(
            saved.journal_seq,
            Some(4),
            "the checkpoint moved past the replay"
        );
    }

    #[test]
    fn a_changed_rule_starts_afresh_and_the_others_keep_their_windows() {
        let mut engine = Engine::new(vec![rule("a", "1m"), rule("b", "1m")]).expect("engine");
        engine.process(&Event {
            topic: "line1/m1/temp",
            payload: b"20",
            received_at: 1_000,
            stream_seq: 1,
        });
        let state = engine.checkpoint();
        let rebuilt = build(vec![rule("a", "5m"), rule("b", "1m")], state.clone());
        assert_eq!(rebuilt.keys("a"), 0, "a changed: its windows are gone");
        assert_eq!(rebuilt.keys("b"), 1, "b kept its window");
        let dropped = build(vec![rule("b", "1m")], state);
        assert_eq!(dropped.keys("b"), 1);
        assert_eq!(dropped.keys("a"), 0, "a removed");
    }

    #[test]
    fn the_windows_of_one_owner_never_feed_another_owners_rule_of_the_same_name() {
        let mut engine = Engine::new(vec![rule("a", "1m")]).expect("engine");
        engine.process(&Event {
            topic: "line1/m1/temp",
            payload: b"20",
            received_at: 1_000,
            stream_seq: 1,
        });
        let state = engine.checkpoint();
        let same = build(
            vec![rule("a", "1m")],
            for_owner(state.clone(), Some("acme"), Some("acme")),
        );
        assert_eq!(same.keys("a"), 1, "the same owner keeps its window");
        let unknown = build(
            vec![rule("a", "1m")],
            for_owner(state.clone(), None, Some("acme")),
        );
        assert_eq!(
            unknown.keys("a"),
            1,
            "a checkpoint from before owners were kept"
        );
        let moved = build(
            vec![rule("a", "1m")],
            for_owner(state, Some("acme"), Some("initech")),
        );
        assert_eq!(moved.keys("a"), 0, "initech's rule 'a' starts from nothing");
    }
}
