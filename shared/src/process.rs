//! Running real external programs (nats-server, the AWS API emulator, ...)
//! as supervised children: started, awaited until they say they are ready,
//! stopped gracefully, killed on drop.
//!
//! Readiness is an *event* — a line the program prints — never a sleep.
//! Output is drained continuously (a full pipe would stall the child) and
//! the last lines are kept to explain a failure.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How many output lines are kept for diagnostics.
const TAIL_LINES: usize = 200;

/// Why a supervised program could not be started or stopped.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// The program could not be executed at all.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// The program.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program exited before it said it was ready.
    #[error("{name} exited before it was ready ({status}); last output:\n{tail}")]
    ExitedEarly {
        /// The program.
        name: String,
        /// Its exit status, as text.
        status: String,
        /// Its last lines of output.
        tail: String,
    },
    /// The program did not say it was ready in time.
    #[error("{name} was not ready within {timeout:?}; last output:\n{tail}")]
    Timeout {
        /// The program.
        name: String,
        /// How long we waited.
        timeout: Duration,
        /// Its last lines of output.
        tail: String,
    },
    /// Waiting for or signalling the program failed.
    #[error("{name}: {source}")]
    Io {
        /// The program.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

type Tail = Arc<Mutex<VecDeque<String>>>;

/// A running child program. Dropping it stops the program: SIGTERM at once
/// (so a program that runs children of its own, like `plantd up`, can stop
/// them in order), SIGKILL five seconds later if it is still there.
#[derive(Debug)]
pub struct ManagedProcess {
    /// Name used in logs and errors.
    name: String,
    /// The child; stopped on drop (see the type's docs).
    child: Child,
    /// The last lines of its combined output.
    tail: Tail,
}

fn drain<R: AsyncRead + Unpin + Send + 'static>(r: R, tx: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

fn push_tail(tail: &Tail, line: String) {
    if let Ok(mut t) = tail.lock() {
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else {
            return; // already reaped
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = std::thread::Builder::new()
            .name("reap-child".into())
            .spawn(move || {
                std::thread::sleep(Duration::from_secs(5));
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            });
    }
}

/// Makes the child receive SIGTERM when the thread that started it ends —
/// in practice when this process dies, even by SIGKILL, which runs no
/// destructor: `plantd up` killed must not leave its nats-server running
/// (docs/decisions/0018-child-processes-die-with-plantd.md).
///
/// Linux's parent-death signal is tied to the *thread* that forked the
/// child, so children must be started from a thread that lives as long as
/// they should (a runtime's main or worker thread, not a
/// `spawn_blocking` thread, which ends when idle).
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed; it makes two system calls
    // (prctl, getppid), allocates nothing and takes no locks.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            // The parent may have died before the signal was armed.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "parent exited before the child started",
                ));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

impl ManagedProcess {
    /// Starts `cmd` and waits until `ready` returns true for a line of its
    /// standard output or error (the closure may also pick values out of
    /// the lines, such as a port).
    ///
    /// # Errors
    /// [`ProcessError::Spawn`] if it cannot be executed,
    /// [`ProcessError::ExitedEarly`] if it exits first, and
    /// [`ProcessError::Timeout`] if it is not ready within `timeout` (it is
    /// killed then).
    pub async fn spawn(
        name: impl Into<String>,
        mut cmd: Command,
        timeout: Duration,
        mut ready: impl FnMut(&str) -> bool,
    ) -> Result<Self, ProcessError> {
        let name = name.into();
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: name.clone(),
            source,
        })?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Some(out) = child.stdout.take() {
            drain(out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            drain(err, tx);
        }
        let tail: Tail = Arc::new(Mutex::new(VecDeque::new()));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut this = Self { name, child, tail };
        loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some(line) => {
                        let is_ready = ready(&line);
                        tracing::trace!(program = %this.name, %line, "child output");
                        push_tail(&this.tail, line);
                        if is_ready {
                            break;
                        }
                    }
                    None => {
                        // Both pipes closed: the program has exited or is about to.
                        let status = this.child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        return Err(ProcessError::ExitedEarly { name: this.name.clone(), status, tail: this.tail_text() });
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = this.child.kill().await;
                    return Err(ProcessError::Timeout { name: this.name.clone(), timeout, tail: this.tail_text() });
                }
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        let tail = this.tail.clone();
        let prog = this.name.clone();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                tracing::trace!(program = %prog, %line, "child output");
                push_tail(&tail, line);
            }
        });
        Ok(this)
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating-system process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last lines the program printed.
    pub fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn tail_text(&self) -> String {
        self.tail().join("\n")
    }

    /// Sends SIGTERM and waits up to `grace` for the program to exit, then
    /// kills it.
    ///
    /// # Errors
    /// [`ProcessError::Io`] if waiting fails.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, ProcessError> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(r) => r.map_err(|source| ProcessError::Io {
                name: self.name.clone(),
                source,
            }),
            Err(_) => {
                tracing::warn!(program = %self.name, ?grace, "did not exit after SIGTERM; killing");
                self.kill().await
            }
        }
    }

    /// Kills the program at once (SIGKILL) and reaps it.
    ///
    /// # Errors
    /// [`ProcessError::Io`] if waiting fails.
    pub async fn kill(&mut self) -> Result<ExitStatus, ProcessError> {
        let _ = self.child.start_kill();
        self.child.wait().await.map_err(|source| ProcessError::Io {
            name: self.name.clone(),
            source,
        })
    }

    /// Waits for the program to exit by itself.
    ///
    /// # Errors
    /// [`ProcessError::Io`] if waiting fails.
    pub async fn wait(&mut self) -> Result<ExitStatus, ProcessError> {
        self.child.wait().await.map_err(|source| ProcessError::Io {
            name: self.name.clone(),
            source,
        })
    }
}
