//! The engine's task: one [`Engine`] for the site, fed the accepted
//! readings, moved along by the wall clock, rebuilt when the rules change,
//! checkpointed to `<data-dir>/`[`STATE_FILE`].
//!
//! Exactly once at the edge: every reading gets the next number of a
//! counter kept in the checkpoint with the engine's state (the engine's
//! "stream sequence"), and the checkpoint is written after each batch of
//! results is durable in the journal — so a restart never emits a result
//! the journal already carries. What a crash can cost is the readings
//! applied since the last checkpoint (at most `checkpoint_secs`, or the
//! last batch): they are not in the journal's results and are not read
//! again. A clean shutdown checkpoints last.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use plantd_analytics::{Engine, EngineError, Event, Output, Rule, State};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::feed::{Reading, Stats, now_ms};
use super::results::Results;
use super::rules::Rules;

/// The checkpoint under `--data-dir`.
pub const STATE_FILE: &str = "analytics-state.json";

/// How long a shutdown waits for the last results and checkpoint.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Readings applied per turn at most (one batch of results, one
/// checkpoint).
const BATCH: usize = 1024;

/// The checkpoint file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// The number the next reading gets.
    next_seq: u64,
    /// The engine's state.
    state: State,
}

fn empty() -> State {
    State {
        version: State::VERSION,
        rules: Vec::new(),
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
    next_seq: u64,
    rules: watch::Receiver<Rules>,
    results: Results,
    stats: Arc<Stats>,
    /// Readings applied since the last checkpoint.
    dirty: bool,
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
    /// (none, or unreadable: from nothing, logged).
    pub fn new(
        settings: Settings,
        rules: watch::Receiver<Rules>,
        results: Results,
        stats: Arc<Stats>,
    ) -> Self {
        let saved = Self::load(&settings.state_file);
        let (next_seq, state) = saved.map_or((1, empty()), |c| (c.next_seq.max(1), c.state));
        let current = rules.borrow().clone();
        let engine = build(compile(&current), state);
        stats.rules.store(current.len() as u64, Ordering::Relaxed);
        Self {
            settings,
            engine,
            next_seq,
            rules,
            results,
            stats,
            dirty: false,
        }
    }

    fn load(path: &std::path::Path) -> Option<Checkpoint> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read the analytics checkpoint; starting afresh");
                return None;
            }
        };
        match serde_json::from_slice::<Checkpoint>(&bytes) {
            Ok(c) if c.state.version == State::VERSION => Some(c),
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

    /// Runs until `stop`, then applies what is queued, publishes and
    /// checkpoints.
    pub async fn run(mut self, mut readings: mpsc::Receiver<Reading>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save = tokio::time::interval(self.settings.checkpoint_every);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        save.tick().await;
        let mut batch = Vec::with_capacity(BATCH);
        let mut out = Vec::new();
        let mut following = true;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = self.rules.changed(), if following => match changed {
                    Ok(()) => self.rebuild(),
                    // The follower stopped: keep the rules we have.
                    Err(_) => following = false,
                },
                n = readings.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.apply(&mut batch, &mut out);
                }
                _ = tick.tick() => out.extend(self.engine.advance(now_ms())),
                _ = save.tick() => if self.dirty {
                    self.checkpoint().await;
                },
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
                        warn!("shutdown while the journal is full: the last analytics results are not journaled and the state is not checkpointed (the previous checkpoint stands)");
                        return;
                    }
                }
            }
        }
        // Accepted before the shutdown: applied, not lost.
        while let Ok(r) = readings.try_recv() {
            batch.push(r);
        }
        self.apply(&mut batch, &mut out);
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

    fn apply(&mut self, batch: &mut Vec<Reading>, out: &mut Vec<Output>) {
        if batch.is_empty() {
            return;
        }
        for r in batch.drain(..) {
            let event = Event {
                topic: &r.topic,
                payload: &r.payload,
                received_at: r.received_at,
                stream_seq: self.next_seq,
            };
            self.next_seq += 1;
            self.engine.process_into(&event, out);
            self.stats.processed.fetch_add(1, Ordering::Relaxed);
        }
        self.dirty = true;
    }

    /// Results out, then the checkpoint that says they are out.
    async fn emit(&mut self, out: &mut Vec<Output>) {
        self.results.publish(out).await;
        out.clear();
        self.checkpoint().await;
    }

    /// The engine for the new rules, keeping the state of the unchanged.
    fn rebuild(&mut self) {
        let current = self.rules.borrow_and_update().clone();
        let state = self.engine.checkpoint();
        self.engine = build(compile(&current), state);
        self.stats
            .rules
            .store(current.len() as u64, Ordering::Relaxed);
        info!(rules = current.len(), "analytics engine runs the new rules");
    }

    async fn checkpoint(&mut self) {
        let saved = Checkpoint {
            next_seq: self.next_seq,
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
            Ok(Ok(())) => self.dirty = false,
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

    fn rule(name: &str, window: &str) -> Rule {
        Rule::from_sql(
            name,
            &format!(r#"SELECT avg(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE({window})"#),
        )
        .expect("rule")
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
}
