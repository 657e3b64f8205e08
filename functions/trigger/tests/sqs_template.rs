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
