//! Compiling an analytics rule's SQL to its JSON form, for
//! `PUT /v1/analytics/rules/{name}` with `sql` (decision 0047).
//!
//! With the cargo feature `sql-rules` (default) the proxy compiles it
//! itself ([`plantd_analytics::Rule::from_sql`], sqlparser). The Lambda
//! bootstrap is built without it — the SQL parser is over 1 MB of code, an
//! eighth of the bootstrap's budget — and asks over NATS instead: a request
//! on [`SUBJECT`] whose answer goes to a subject under [`REPLY_PREFIX`]. Both
//! are under `plantd_fanout.>`, which the edge user may not publish to
//! (infra/nats/accounts.conf), so no edge can answer in the compiler's
//! place. The fan-out process (`PLANTD_PROXY_MODE=fanout`, built with every
//! feature) answers ([`serve`]); a write waits at most [`TIMEOUT`] for it,
//! then fails with 503 naming what is missing. A rule given in its JSON
//! form needs no compiler.
//!
//! Either way the answer is the same: the rule, or the error
//! `line <l>, column <c>: <what>` that the API shows as `sql: …`.

use std::time::Duration;

use futures::StreamExt as _;
use plantd_analytics::Rule;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// Where compile requests go (the fan-out process's queue group
/// [`QUEUE`] answers).
pub const SUBJECT: &str = "plantd_fanout.rules.compile";
/// The prefix of the subjects answers go to; a compiler answers nothing
/// else.
pub const REPLY_PREFIX: &str = "plantd_fanout.rules.reply";
/// The queue group of the compilers: one answers each request.
pub const QUEUE: &str = "plantd-rules-compile";
/// How long a write waits for a compiler's answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A compile request: the rule's name and its SQL.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    name: String,
    sql: String,
}

/// A compiler's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    /// The rule's JSON form.
    Rule(Box<Rule>),
    /// Why the SQL is refused (`line <l>, column <c>: …`).
    Error(String),
}

/// Why a rule's SQL did not compile.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The SQL is refused: `line <l>, column <c>: …`.
    #[error("{0}")]
    Sql(String),
    /// No compiler answered (or NATS failed on the way).
    #[error(
        "no analytics rule compiler answered on {SUBJECT} ({0}); the fan-out process (PLANTD_PROXY_MODE=fanout) compiles SQL rules for the Lambda proxy — give the rule in its JSON form (`rule`) meanwhile"
    )]
    Unavailable(String),
}

impl From<CompileError> for AppError {
    fn from(e: CompileError) -> Self {
        match e {
            CompileError::Sql(message) => AppError::bad_request(format!("sql: {message}")),
            e @ CompileError::Unavailable(_) => AppError::unavailable(e),
        }
    }
}

/// Who compiles: this process, or a compiler over NATS.
#[derive(Debug, Clone)]
pub enum Compiler {
    /// This process (feature `sql-rules`).
    #[cfg(feature = "sql-rules")]
    Here,
    /// A compiler answering on [`SUBJECT`].
    Remote(async_nats::Client),
}

impl Compiler {
    /// The compiler of this build: [`Compiler::Here`] with the feature
    /// `sql-rules`, otherwise one over `client`.
    pub fn of_build(client: &async_nats::Client) -> Self {
        #[cfg(feature = "sql-rules")]
        {
            let _ = client;
            Compiler::Here
        }
        #[cfg(not(feature = "sql-rules"))]
        Compiler::Remote(client.clone())
    }

    /// Compiles `sql` to rule `name`.
    ///
    /// # Errors
    /// [`CompileError::Sql`] when the SQL is refused,
    /// [`CompileError::Unavailable`] when no compiler answered in time.
    pub async fn compile(&self, name: &str, sql: &str) -> Result<Rule, CompileError> {
        match self {
            #[cfg(feature = "sql-rules")]
            Compiler::Here => compile_here(name, sql),
            Compiler::Remote(client) => ask(client, name, sql).await,
        }
    }
}

/// Compiles in this process.
#[cfg(feature = "sql-rules")]
fn compile_here(name: &str, sql: &str) -> Result<Rule, CompileError> {
    Rule::from_sql(name, sql).map_err(|e| CompileError::Sql(e.to_string()))
}

/// Asks a compiler over NATS.
async fn ask(client: &async_nats::Client, name: &str, sql: &str) -> Result<Rule, CompileError> {
    let unavailable = |e: &dyn std::fmt::Display| CompileError::Unavailable(e.to_string());
    let request = serde_json::to_vec(&Request {
        name: name.to_owned(),
        sql: sql.to_owned(),
    })
    .map_err(|e| unavailable(&e))?;
    let reply = format!("{REPLY_PREFIX}.{}", uuid::Uuid::new_v4().simple());
    let mut answers = client
        .subscribe(reply.clone())
        .await
        .map_err(|e| unavailable(&e))?;
    client
        .publish_with_reply(SUBJECT, reply, request.into())
        .await
        .map_err(|e| unavailable(&e))?;
    let answer = tokio::time::timeout(TIMEOUT, answers.next()).await;
    let _ = answers.unsubscribe().await;
    let msg = match answer {
        Ok(Some(msg)) => msg,
        Ok(None) => return Err(unavailable(&"the subscription ended")),
        Err(_) => {
            return Err(unavailable(&format_args!(
                "no answer within {} s",
                TIMEOUT.as_secs()
            )));
        }
    };
    if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Err(unavailable(&"no compiler is subscribed"));
    }
    match serde_json::from_slice::<Answer>(&msg.payload) {
        Ok(Answer::Rule(rule)) => Ok(*rule),
        Ok(Answer::Error(message)) => Err(CompileError::Sql(message)),
        Err(e) => Err(unavailable(&format_args!("a malformed answer: {e}"))),
    }
}

/// Answers compile requests on [`SUBJECT`] (queue group [`QUEUE`]) until
/// the connection closes; the fan-out process runs it.
///
/// # Errors
/// The subscription could not be made.
#[cfg(feature = "sql-rules")]
pub async fn serve(
    client: async_nats::Client,
) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
    let mut requests = client.queue_subscribe(SUBJECT, QUEUE.into()).await?;
    Ok(tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let Some(reply) = msg.reply else {
                continue;
            };
            if !reply.as_str().starts_with(REPLY_PREFIX) {
                tracing::warn!(reply = %reply, "rule compile request with a foreign reply subject ignored");
                continue;
            }
            let answer = match serde_json::from_slice::<Request>(&msg.payload) {
                Ok(req) => match compile_here(&req.name, &req.sql) {
                    Ok(rule) => Answer::Rule(Box::new(rule)),
                    Err(e) => Answer::Error(e.to_string()),
                },
                Err(e) => Answer::Error(format!("a malformed compile request: {e}")),
            };
            let bytes = match serde_json::to_vec(&answer) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode a compiled rule");
                    continue;
                }
            };
            if let Err(e) = client.publish(reply, bytes.into()).await {
                tracing::warn!(error = %e, "cannot answer a rule compile request");
            }
        }
    }))
}
