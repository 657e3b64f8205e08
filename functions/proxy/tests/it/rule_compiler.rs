//! SQL analytics rules compiled over NATS (`plantd_proxy::rule_compiler`),
//! as the Lambda proxy — built without the SQL parser — has them compiled
//! by the fan-out process: against a real nats-server, the answer is the
//! one compiling in the process gives, a refused SQL keeps its line and
//! column, and with no compiler a write fails clearly instead of hanging.

use plantd_analytics::Rule;
use plantd_proxy::rule_compiler::{self, CompileError, Compiler};
use plantd_testkit::Nats;

const SQL: &str = r#"SELECT avg(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#;
const BAD: &str = "SELECT avg(value) FROM";

#[tokio::test]
async fn a_remote_compiler_answers_as_this_process_compiles() {
    let nats = Nats::start().await;
    let server = nats.client().await;
    let compiler = rule_compiler::serve(server).await.expect("serve");
    let remote = Compiler::Remote(nats.client().await);

    let rule = remote.compile("temp", SQL).await.expect("compiled");
    assert_eq!(rule, Rule::from_sql("temp", SQL).expect("local"));
    assert_eq!(rule.name, "temp");

    let Err(CompileError::Sql(message)) = remote.compile("temp", BAD).await else {
        panic!("bad SQL must be refused");
    };
    let local = Rule::from_sql("temp", BAD)
        .expect_err("refused")
        .to_string();
    assert_eq!(message, local);
    assert!(message.starts_with("line 1, column "), "{message}");
    // As the API shows it.
    let e = plantd_shared::http::AppError::from(CompileError::Sql(message));
    assert!(
        e.message.starts_with("sql: line 1, column "),
        "{}",
        e.message
    );
    compiler.abort();
}

#[tokio::test]
async fn without_a_compiler_a_sql_write_fails_saying_what_is_missing() {
    let nats = Nats::start().await;
    let remote = Compiler::Remote(nats.client().await);
    let e = remote
        .compile("temp", SQL)
        .await
        .expect_err("nobody compiles");
    assert!(matches!(e, CompileError::Unavailable(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains(rule_compiler::SUBJECT), "{text}");
    assert!(text.contains("PLANTD_PROXY_MODE=fanout"), "{text}");
    assert!(text.contains("no compiler is subscribed"), "{text}");
}

#[tokio::test]
async fn a_compiler_answers_only_to_the_reply_prefix() {
    let nats = Nats::start().await;
    let compiler = rule_compiler::serve(nats.client().await)
        .await
        .expect("serve");
    // A request whose answer would go anywhere else (an edge's inbox) is
    // not answered: plain request/reply times out.
    let client = nats.client().await;
    let asked = client.request(
        rule_compiler::SUBJECT,
        serde_json::to_vec(&serde_json::json!({"name": "temp", "sql": SQL}))
            .expect("json")
            .into(),
    );
    let answer = tokio::time::timeout(std::time::Duration::from_secs(2), asked).await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "answered outside the reply prefix"
    );
    compiler.abort();
}
