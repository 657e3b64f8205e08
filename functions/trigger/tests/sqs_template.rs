//! `infra/template.yaml` agrees with the trigger's AWS half: one queue per
//! (function, stream) binding named after its durable consumer, each with
//! a dead-letter queue and a redrive policy, an event source mapping that
//! reports partial batch failures, a visibility timeout above the
//! function's timeout, the forwarder allowed only to send to those queues,
//! and the example forwarder configuration in `infra/trigger/` loading and
//! naming declared queues. (`cfn-lint` checks the template itself in
//! `scripts/test`.)

use plantd_trigger::durable_name;
use plantd_trigger::forward::ForwarderConfig;

const INFRA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra");

/// The bindings the template declares: (resource prefix, function, stream,
/// function resource).
const BINDINGS: [(&str, &str, &str, &str); 5] = [
    ("LoggerLogs", "logger", "PLANTD_LOGS", "LoggerFunction"),
    ("AlertsLogs", "alerts", "PLANTD_LOGS", "AlertsFunction"),
    (
        "AlertsTelemetry",
        "alerts",
        "PLANTD_TELEMETRY",
        "AlertsFunction",
    ),
    (
        "AlertsAggregates",
        "alerts",
        "PLANTD_AGGREGATES",
        "AlertsFunction",
    ),
    (
        "NotifierAlerts",
        "notifier",
        "PLANTD_ALERTS",
        "NotifierFunction",
    ),
];

fn template() -> String {
    let path = format!("{INFRA}/template.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text of resource `name`: its line and every line after it up to
/// the next top-level key (two-space indent) or section.
fn resource(t: &str, name: &str) -> String {
    let head = format!("  {name}:");
    let mut lines = t.lines().skip_while(|l| *l != head);
    let first = lines.next().unwrap_or_else(|| panic!("no resource {name}"));
    let body = lines.take_while(|l| {
        let top = l.starts_with("  ") && !l.starts_with("   ") && !l.starts_with("  #");
        let section = !l.is_empty() && !l.starts_with(' ');
        !top && !section
    });
    std::iter::once(first)
        .chain(body)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_binding_has_a_queue_a_dead_letter_queue_and_a_mapping_with_partial_failures() {
    let t = template();
    for (name, function, stream, function_resource) in BINDINGS {
        let durable = durable_name(function, stream).expect("valid names");
        let queue = resource(&t, &format!("{name}Queue"));
        for needle in [
            format!("QueueName: !Sub plantd-${{Stage}}-{durable}\n"),
            format!("deadLetterTargetArn: !GetAtt {name}DeadLetterQueue.Arn"),
            "maxReceiveCount: !Ref QueueMaxReceiveCount".to_owned(),
            "VisibilityTimeout: 180".to_owned(),
            "SqsManagedSseEnabled: true".to_owned(),
        ] {
            assert!(
                queue.contains(&needle),
                "{name}Queue lacks `{needle}`:\n{queue}"
            );
        }
        assert!(
            !queue.contains("FifoQueue"),
            "standard queues (decision 0026)"
        );
        let dlq = resource(&t, &format!("{name}DeadLetterQueue"));
        assert!(dlq.contains(&format!("QueueName: !Sub plantd-${{Stage}}-{durable}-dlq")));
        assert!(dlq.contains("MessageRetentionPeriod: 1209600"));
        let mapping = resource(&t, &format!("{name}Mapping"));
        for needle in [
            "Type: AWS::Lambda::EventSourceMapping".to_owned(),
            format!("FunctionName: !Ref {function_resource}"),
            format!("EventSourceArn: !GetAtt {name}Queue.Arn"),
            "FunctionResponseTypes: [ReportBatchItemFailures]".to_owned(),
            "MaximumBatchingWindowInSeconds: 1".to_owned(),
        ] {
            assert!(
                mapping.contains(&needle),
                "{name}Mapping lacks `{needle}`:\n{mapping}"
            );
        }
        // The queue hides a message being handled for six times the
        // function's timeout, so a slow batch is not handed out twice.
        let function = resource(&t, function_resource);
        assert!(function.contains("Timeout: 30"), "{function_resource}");
        // The function may poll its own queues, and no other.
        let role = resource(&t, &function_resource.replace("Function", "Role"));
        assert!(
            role.contains(&format!("- !GetAtt {name}Queue.Arn")),
            "{role}"
        );
        assert!(role.contains("sqs:ReceiveMessage") && !role.contains("sqs:SendMessage"));
    }
    assert_eq!(
        t.matches("Type: AWS::Lambda::EventSourceMapping").count(),
        BINDINGS.len()
    );
}

#[test]
fn the_forwarder_may_only_send_to_the_queues() {
    let t = template();
    let policy = resource(&t, "ForwarderPolicy");
    assert!(policy.contains("Action: sqs:SendMessage\n"), "{policy}");
    for (name, ..) in BINDINGS {
        assert!(
            policy.contains(&format!("!GetAtt {name}Queue.Arn")),
            "{name}"
        );
    }
    // No other statement grants sending (comments and descriptions aside).
    let grants = t
        .lines()
        .filter(|l| l.contains("sqs:SendMessage"))
        .filter(|l| !l.trim_start().starts_with('#') && !l.contains("Description:"))
        .count();
    assert_eq!(grants, 1, "sqs:SendMessage is the forwarder's alone");
    let role = resource(&t, "ForwarderRole");
    assert!(role.contains("Service: ec2.amazonaws.com"));
    assert!(role.contains("- !Ref ForwarderPolicy"));
    assert!(!role.contains("Policies:"), "nothing beside the policy");
    assert!(!t.contains("Resource: \"*\"") && !t.contains("Resource: '*'"));
}

#[test]
fn the_logger_writes_only_under_its_site_prefix() {
    let t = template();
    let f = resource(&t, "LoggerFunction");
    assert!(f.contains("CodeUri: ../target/lambda/plantd-logger/bootstrap.zip"));
    assert!(f.contains("PLANTD_CLOUDWATCH_PREFIX: !Sub /plantd/${Stage}/sites\n"));
    let role = resource(&t, "LoggerRole");
    assert!(role.contains(":log-group:/plantd/${Stage}/sites/*\""));
    assert!(role.contains(":log-group:/plantd/${Stage}/sites/*:log-stream:*\""));
    assert!(role.contains("logs:CreateLogGroup"));
    // NATS (the aggregates) only when asked for.
    assert!(
        f.contains("PLANTD_NATS_URL: !If [WithLoggerAggregates, !Ref NatsUrl, !Ref AWS::NoValue]")
    );
    assert!(t.contains("  LoggerAggregates:\n    Type: String\n    Default: disabled\n"));
}

#[test]
fn the_example_forwarder_config_loads_and_names_declared_queues() {
    let t = template();
    let file = std::path::PathBuf::from(format!("{INFRA}/trigger/forwarder.toml"));
    #[derive(serde::Serialize)]
    struct NoOverrides {}
    let config: ForwarderConfig =
        plantd_shared::config::load_from_env(Some(&file), &NoOverrides {}, "PLANTD_TEST_NONE_")
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.bindings.is_empty());
    for b in &config.bindings {
        let durable = durable_name(&b.function, &b.stream).expect("valid names");
        assert!(
            b.queue_url.ends_with(&format!("-{durable}")),
            "{} is not the queue of {durable}",
            b.queue_url
        );
        assert!(t.contains(&format!("QueueName: !Sub plantd-${{Stage}}-{durable}\n")));
        assert_eq!(config.settings(b).validate(), Ok(()));
    }
    let unit = std::fs::read_to_string(format!("{INFRA}/trigger/plantd-forwarder.service"))
        .expect("the unit");
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/plantd-forwarder --config /etc/plantd/forwarder.toml"
        )
    );
}

#[test]
fn the_alerts_package_runs_the_engine_with_a_clock_and_the_notifier_both_on_nats() {
    let t = template();
    for (function, role) in [
        ("AlertsFunction", "alerts"),
        ("NotifierFunction", "notifier"),
    ] {
        let f = resource(&t, function);
        for needle in [
            "Condition: WithAlerting".to_owned(),
            "CodeUri: ../target/lambda/plantd-alerts/bootstrap.zip".to_owned(),
            format!("PLANTD_FUNCTION: {role}\n"),
            "PLANTD_NATS_URL: !Ref NatsUrl\n".to_owned(),
            "PLANTD_NATS_CREDS: !If [WithNatsCredsFile, !Ref NatsCredsFile, !Ref AWS::NoValue]"
                .to_owned(),
            "Layers: !If [WithNatsCredsLayer, [!Ref NatsCredsLayerArn], !Ref AWS::NoValue]"
                .to_owned(),
        ] {
            assert!(f.contains(&needle), "{function} lacks `{needle}`:\n{f}");
        }
    }
    // The engine's clock: a scheduled event every minute, the only event
    // besides its queues' mappings.
    let alerts = resource(&t, "AlertsFunction");
    assert!(alerts.contains("Type: Schedule\n"), "{alerts}");
    assert!(alerts.contains("Schedule: rate(1 minute)\n"), "{alerts}");
    assert_eq!(alerts.matches("Type: ").count(), 2, "one event: {alerts}");
    assert!(!resource(&t, "NotifierFunction").contains("Events:"));
    // The notifier may publish to the account's plantd-* topics, nothing
    // else on SNS; the engine not at all.
    let role = resource(&t, "NotifierRole");
    assert!(role.contains("Action: sns:Publish\n"), "{role}");
    assert!(role.contains(":${AWS::AccountId}:plantd-*\""), "{role}");
    assert!(!resource(&t, "AlertsRole").contains("sns:"));
}

/// The whole template (every condition on: alerting, the fan-out service in
/// a VPC) created as a stack in moto's CloudFormation by
/// `infra/check/moto_stack.py` (which expands the two SAM types moto lacks);
/// the resources moto supports are there: every function, queue, dead-letter
/// queue, mapping, role, log group, the connection table, the dashboard
/// bucket and the alarm topic.
#[tokio::test]
async fn the_template_creates_a_stack_in_motos_cloudformation() {
    let moto = plantd_testkit::Moto::start().await;
    let script = format!("{INFRA}/check/moto_stack.py");
    let params = serde_json::json!({
        "Stage": "test",
        "Alerting": "enabled",
        "LoggerAggregates": "enabled",
        "FanoutImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/plantd:1",
    });
    let out = tokio::process::Command::new(plantd_testkit::tool("python"))
        .arg(&script)
        .arg(format!("{INFRA}/template.yaml"))
        .arg(params.to_string())
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .output()
        .await
        .expect("run moto_stack.py");
    assert!(
        out.status.success(),
        "moto_stack.py failed: {}\nmoto: {}",
        String::from_utf8_lossy(&out.stderr),
        moto.tail().join("\n")
    );
    let stack: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(stack["status"], "CREATE_COMPLETE", "{stack}");
    let created: Vec<(String, String)> = stack["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["status"] == "CREATE_COMPLETE")
        .map(|r| {
            (
                r["logical"].as_str().unwrap_or_default().to_owned(),
                r["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let has = |logical: &str, kind: &str| created.iter().any(|(l, k)| l == logical && k == kind);
    for f in [
        "IdentityFunction",
        "ProxyFunction",
        "WebSocketFunction",
        "LoggerFunction",
        "AlertsFunction",
        "NotifierFunction",
    ] {
        assert!(has(f, "AWS::Lambda::Function"), "{f}: {created:?}");
        let role = f.replace("Function", "Role");
        assert!(has(&role, "AWS::IAM::Role"), "{role}");
    }
    for (name, ..) in BINDINGS {
        assert!(has(&format!("{name}Queue"), "AWS::SQS::Queue"), "{name}");
        assert!(
            has(&format!("{name}DeadLetterQueue"), "AWS::SQS::Queue"),
            "{name}"
        );
        assert!(
            has(&format!("{name}Mapping"), "AWS::Lambda::EventSourceMapping"),
            "{name}"
        );
    }
    for (logical, kind) in [
        ("ConnectionsTable", "AWS::DynamoDB::Table"),
        ("DashboardBucket", "AWS::S3::Bucket"),
        ("AlarmTopic", "AWS::SNS::Topic"),
        ("ForwarderPolicy", "AWS::IAM::ManagedPolicy"),
        ("FanoutPolicy", "AWS::IAM::ManagedPolicy"),
        ("IdentityLogs", "AWS::Logs::LogGroup"),
        ("LoggerLogs", "AWS::Logs::LogGroup"),
    ] {
        assert!(has(logical, kind), "{logical}: {created:?}");
    }
}

/// Every function has an errors and a throttles alarm, every queue a
/// dead-letter depth and a lag alarm, all to the alarm topic; the custom
/// consumer-lag and edge-backlog alarms exist; every log group has a
/// retention; every function runs on the `Architecture` parameter's
/// instruction set (arm64 or x86_64).
#[test]
fn every_function_and_queue_is_watched_and_every_log_group_expires() {
    let t = template();
    for f in [
        "Identity",
        "Proxy",
        "WebSocket",
        "Logger",
        "Alerts",
        "Notifier",
    ] {
        for metric in ["Errors", "Throttles"] {
            let alarm = resource(&t, &format!("{f}{metric}Alarm"));
            assert!(
                alarm.contains(&format!("MetricName: {metric}\n")),
                "{alarm}"
            );
            assert!(
                alarm.contains(&format!("Value: !Ref {f}Function\n")),
                "{alarm}"
            );
            assert!(alarm.contains("AlarmActions: [!Ref AlarmTopic]"), "{alarm}");
        }
    }
    for (name, ..) in BINDINGS {
        let dlq = resource(&t, &format!("{name}DeadLetterAlarm"));
        assert!(dlq.contains(&format!("!GetAtt {name}DeadLetterQueue.QueueName")));
        assert!(dlq.contains("MetricName: ApproximateNumberOfMessagesVisible"));
        let lag = resource(&t, &format!("{name}LagAlarm"));
        assert!(lag.contains("MetricName: ApproximateAgeOfOldestMessage"));
    }
    assert!(resource(&t, "ConsumerLagAlarm").contains("MetricName: ConsumerPending"));
    assert!(resource(&t, "EdgeBacklogAlarm").contains("MetricName: EdgeBacklogMessages"));
    let groups = t.matches("Type: AWS::Logs::LogGroup").count();
    let retained = t.matches("RetentionInDays: !Ref LogRetentionDays").count();
    assert_eq!(groups, retained, "every log group has a retention");
    assert!(t.contains("    Architectures: [!Ref Architecture]\n"));
    assert!(t.contains("  Architecture:\n    Type: String\n    Default: arm64\n    AllowedValues: [arm64, x86_64]\n"));
}

/// The alarms on the forwarder's metrics watch exactly what
/// `plantd_trigger::cloud_metrics` puts: its namespace, metric names and
/// dimensions (none: the documents carry a dimensionless copy), in the log
/// group the forwarder may write to and that has a retention; and the
/// example configuration turns the metrics on.
#[test]
fn the_metric_alarms_watch_what_the_forwarder_puts() {
    use plantd_trigger::cloud_metrics::{
        CONSUMER_PENDING, EDGE_BACKLOG_MESSAGES, EDGES_NOT_CONNECTED, log_group, namespace,
    };
    let t = template();
    for (alarm, metric) in [
        ("ConsumerLagAlarm", CONSUMER_PENDING),
        ("EdgeBacklogAlarm", EDGE_BACKLOG_MESSAGES),
        ("EdgesNotConnectedAlarm", EDGES_NOT_CONNECTED),
    ] {
        let a = resource(&t, alarm);
        assert!(
            a.contains(&format!(
                "\n      Namespace: !Sub {}\n",
                namespace("${Stage}")
            )),
            "{a}"
        );
        assert!(
            a.contains(&format!("\n      MetricName: {metric}\n")),
            "{a}"
        );
        assert!(!a.contains("Dimensions:"), "the dimensionless copy: {a}");
        assert!(a.contains("Statistic: Maximum\n"), "{a}");
        assert!(a.contains("TreatMissingData: missing\n"), "{a}");
        assert!(a.contains("AlarmActions: [!Ref AlarmTopic]"), "{a}");
    }
    let group = log_group("${Stage}");
    let logs = resource(&t, "MetricsLogs");
    assert!(
        logs.contains(&format!("LogGroupName: !Sub {group}\n")),
        "{logs}"
    );
    let policy = resource(&t, "ForwarderPolicy");
    assert!(
        policy.contains(&format!(":log-group:{group}:log-stream:*\"")),
        "{policy}"
    );
    assert!(policy.contains("Action: logs:PutLogEvents\n"), "{policy}");
    assert!(
        policy.contains("Action: logs:CreateLogStream\n"),
        "{policy}"
    );
    let file = std::path::PathBuf::from(format!("{INFRA}/trigger/forwarder.toml"));
    #[derive(serde::Serialize)]
    struct NoOverrides {}
    let config: ForwarderConfig =
        plantd_shared::config::load_from_env(Some(&file), &NoOverrides {}, "PLANTD_TEST_NONE_")
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.cloud_metrics.enabled());
    assert_eq!(
        config.cloud_metrics.interval_ms, 60_000,
        "the alarms' period"
    );
}
