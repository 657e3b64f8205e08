//! `infra/template.yaml` agrees with the proxy's code: the modes and
//! variables the binary reads, the table's keys, index and TTL attribute as
//! the registry uses them, the WebSocket routes the handler answers, and
//! least-privilege IAM. (`cfn-lint` checks the template itself in
//! `scripts/test`.)

use plantd_proxy::aws::registry::{
    CONNECTION_KEY, ITEM_KEY, JTI_ATTRIBUTE, JTI_INDEX, SITE_INDEX, SITE_ORG_ATTRIBUTE,
    TTL_ATTRIBUTE,
};
use plantd_proxy::aws::{MODE_ENV, TABLE_ENV, secrets::SECRET_ID_ENV};

fn template() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
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
fn functions_match_the_binary_modes_and_variables() {
    let t = template();
    let rest = resource(&t, "ProxyFunction");
    let ws = resource(&t, "WebSocketFunction");
    for (r, mode) in [(&rest, "http"), (&ws, "websocket")] {
        for needle in [
            format!("{MODE_ENV}: {mode}"),
            format!("{SECRET_ID_ENV}: !Ref ProxySecret"),
            "CodeUri: ../target/lambda/plantd-proxy/bootstrap.zip".to_owned(),
        ] {
            assert!(
                r.contains(&needle),
                "{mode} function lacks `{needle}`:\n{r}"
            );
        }
    }
    assert!(ws.contains(&format!("{TABLE_ENV}: !Ref ConnectionsTable")));
    assert!(
        !rest.contains(TABLE_ENV),
        "the REST function has no business with the table"
    );
    for path in [
        "Path: /v1/state/{proxy+}",
        "Path: /v1/sites/{proxy+}",
        "Path: /openapi.json",
    ] {
        assert!(rest.contains(path), "REST function lacks `{path}`");
    }
}

#[test]
fn the_table_is_the_one_the_registry_uses() {
    let t = template();
    let table = resource(&t, "ConnectionsTable");
    for needle in [
        "BillingMode: PAY_PER_REQUEST".to_owned(),
        format!("- AttributeName: {CONNECTION_KEY}\n          KeyType: HASH"),
        format!("- AttributeName: {ITEM_KEY}\n          KeyType: RANGE"),
        format!("- IndexName: {SITE_INDEX}"),
        format!(
            "- AttributeName: site\n              KeyType: HASH\n            - AttributeName: {CONNECTION_KEY}\n              KeyType: RANGE"
        ),
        format!("NonKeyAttributes: [filter, sub_id, {SITE_ORG_ATTRIBUTE}, {TTL_ATTRIBUTE}]"),
        format!("- AttributeName: {JTI_ATTRIBUTE}\n          AttributeType: S"),
        format!("- IndexName: {JTI_INDEX}"),
        format!(
            "- AttributeName: {JTI_ATTRIBUTE}\n              KeyType: HASH\n            - AttributeName: {CONNECTION_KEY}\n              KeyType: RANGE\n          Projection:\n            ProjectionType: KEYS_ONLY"
        ),
        format!("AttributeName: {TTL_ATTRIBUTE}\n        Enabled: true"),
    ] {
        assert!(
            table.contains(&needle),
            "ConnectionsTable lacks `{needle}`:\n{table}"
        );
    }
}

#[test]
fn the_websocket_api_routes_what_the_handler_answers() {
    let t = template();
    let api = resource(&t, "WebSocketApi");
    assert!(api.contains("ProtocolType: WEBSOCKET"));
    assert!(api.contains("RouteSelectionExpression: \"$request.body.op\""));
    for (route, key, two_way) in [
        ("WebSocketConnectRoute", "\"$connect\"", false),
        ("WebSocketDisconnectRoute", "\"$disconnect\"", false),
        ("WebSocketSubscribeRoute", "subscribe", true),
        ("WebSocketUnsubscribeRoute", "unsubscribe", true),
        ("WebSocketCommandRoute", "command", true),
        ("WebSocketDefaultRoute", "\"$default\"", true),
    ] {
        let r = resource(&t, route);
        assert!(r.contains(&format!("RouteKey: {key}")), "{route}:\n{r}");
        assert!(
            r.contains("Target: !Sub integrations/${WebSocketIntegration}"),
            "{route}"
        );
        assert_eq!(
            r.contains("RouteResponseSelectionExpression: \"$default\""),
            two_way,
            "{route}"
        );
    }
    assert_eq!(
        t.matches("Type: AWS::ApiGatewayV2::RouteResponse").count(),
        4
    );
    // Every route is deployed with the stage.
    let stage = resource(&t, "WebSocketStage");
    for route in [
        "WebSocketConnectRoute",
        "WebSocketDisconnectRoute",
        "WebSocketSubscribeRoute",
        "WebSocketUnsubscribeRoute",
        "WebSocketCommandRoute",
        "WebSocketDefaultRoute",
    ] {
        assert!(
            stage.contains(&format!("- {route}\n")),
            "stage lacks {route}"
        );
    }
    let permission = resource(&t, "WebSocketInvokePermission");
    assert!(
        permission.contains("${WebSocketApi}/${Stage}/*"),
        "{permission}"
    );
    let stage = resource(&t, "WebSocketStage");
    assert!(stage.contains("DestinationArn: !GetAtt WebSocketAccessLogs.Arn"));
    for logs in ["ProxyLogs", "WebSocketLogs", "WebSocketAccessLogs"] {
        assert!(
            resource(&t, logs).contains("RetentionInDays: !Ref LogRetentionDays"),
            "{logs}"
        );
    }
}

#[test]
fn iam_is_least_privilege() {
    let t = template();
    // Only the fan-out may post to or close connections, only on this
    // API's stage.
    assert_eq!(t.matches("execute-api:ManageConnections").count(), 1);
    let fanout = resource(&t, "FanoutPolicy");
    assert!(fanout.contains("execute-api:ManageConnections"));
    assert!(fanout.contains("${WebSocketApi}/${Stage}/POST/@connections/*"));
    assert!(fanout.contains("${WebSocketApi}/${Stage}/DELETE/@connections/*"));
    assert!(
        !fanout.contains("PutItem"),
        "the fan-out never writes subscriptions"
    );
    // It finds connections by token id, and scans only that keys-only
    // index (never the table).
    assert!(fanout.contains(&format!(
        "- !Sub \"${{ConnectionsTable.Arn}}/index/{JTI_INDEX}\""
    )));
    assert_eq!(t.matches("dynamodb:Scan").count(), 1);
    assert!(fanout.contains(&format!(
        "Action: dynamodb:Scan\n            Resource: !Sub \"${{ConnectionsTable.Arn}}/index/{JTI_INDEX}\""
    )));
    // DynamoDB: the table (and its index) only, from two places.
    let ws = resource(&t, "WebSocketRole");
    assert!(ws.contains("Resource: !GetAtt ConnectionsTable.Arn"));
    assert!(!ws.contains("execute-api"));
    assert!(!resource(&t, "ProxyRole").contains("dynamodb"));
    for (i, line) in t.lines().enumerate() {
        if line.contains("dynamodb:") {
            let owner = ["WebSocketRole", "FanoutPolicy"]
                .iter()
                .any(|r| resource(&t, r).contains(line));
            assert!(
                owner,
                "line {}: DynamoDB permission outside the two owners",
                i + 1
            );
        }
    }
    assert!(!t.contains("Resource: \"*\"") && !t.contains("Resource: '*'"));
}
