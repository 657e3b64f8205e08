//! `infra/template.yaml` agrees with the proxy's code: the modes and
//! variables the binary reads, the table's keys, index and TTL attribute as
//! the registry uses them, the WebSocket routes the handler answers, and
//! least-privilege IAM. (`cfn-lint` checks the template itself in
//! `scripts/test`.)

use plantd_proxy::aws::registry::{
    CONNECTION_KEY, ITEM_KEY, JTI_ATTRIBUTE, JTI_INDEX, OWNER_ATTRIBUTE, OWNER_INDEX, SITE_INDEX,
    SITE_ORG_ATTRIBUTE, TTL_ATTRIBUTE,
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
    // Each function's package is the proxy built with its role only
    // (scripts/lambda-size: artifacts plantd-proxy and plantd-proxy-ws).
    for (r, mode, artifact) in [
        (&rest, "http", "plantd-proxy"),
        (&ws, "websocket", "plantd-proxy-ws"),
    ] {
        for needle in [
            format!("{MODE_ENV}: {mode}"),
            format!("{SECRET_ID_ENV}: !Ref ProxySecret"),
            format!("CodeUri: ../target/lambda/{artifact}/bootstrap.zip"),
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
        format!("- AttributeName: {OWNER_ATTRIBUTE}\n          AttributeType: S"),
        format!("- IndexName: {OWNER_INDEX}"),
        format!(
            "- AttributeName: {OWNER_ATTRIBUTE}\n              KeyType: HASH\n            - AttributeName: {CONNECTION_KEY}\n              KeyType: RANGE\n          Projection:\n            ProjectionType: KEYS_ONLY"
        ),
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
        ("WebSocketAuthRoute", "auth", true),
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
        5
    );
    // Every route is deployed with the stage.
    let stage = resource(&t, "WebSocketStage");
    for route in [
        "WebSocketConnectRoute",
        "WebSocketDisconnectRoute",
        "WebSocketSubscribeRoute",
        "WebSocketUnsubscribeRoute",
        "WebSocketCommandRoute",
        "WebSocketAuthRoute",
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
        "Action: dynamodb:Scan\n            Resource:\n              - !Sub \"${{ConnectionsTable.Arn}}/index/{JTI_INDEX}\"\n              - !Sub \"${{ConnectionsTable.Arn}}/index/{OWNER_INDEX}\"\n          - Effect"
    )));
    // It reads, takes (a conditional update of `owner`) and removes
    // sequenced subscriptions; it never puts one.
    for action in ["GetItem", "UpdateItem", "DeleteItem"] {
        assert!(
            fanout.contains(&format!("- dynamodb:{action}\n")),
            "{action}"
        );
    }
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

/// The dashboard's one origin reaches live data: `/v1/ws` (before `/v1/*`,
/// the first match wins) goes to the WebSocket API uncached, with every
/// viewer header but `Host` (the `Sec-WebSocket-*` of the upgrade) and the
/// query, its path rewritten to the stage by a viewer-request function.
#[test]
fn the_dashboard_routes_v1_ws_to_the_websocket_api_before_the_http_api() {
    let t = template();
    let d = resource(&t, "Dashboard");
    assert!(
        d.contains("- Id: live\n            DomainName: !Sub ${WebSocketApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}\n            CustomOriginConfig:\n              OriginProtocolPolicy: https-only"),
        "{d}"
    );
    let ws = d
        .find("- PathPattern: /v1/ws\n")
        .expect("a /v1/ws behaviour");
    let api = d.find("- PathPattern: /v1/*\n").expect("a /v1/* behaviour");
    assert!(ws < api, "/v1/ws must come before /v1/*");
    let behaviour = &d[ws..api];
    for needle in [
        "TargetOriginId: live",
        "ViewerProtocolPolicy: https-only",
        // Managed-CachingDisabled, Managed-AllViewerExceptHostHeader
        "CachePolicyId: 4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
        "OriginRequestPolicyId: b689b0a8-53d0-40ab-baf2-68738e2966ac",
        "- EventType: viewer-request\n                FunctionARN: !GetAtt DashboardWebSocketPath.FunctionMetadata.FunctionARN",
    ] {
        assert!(
            behaviour.contains(needle),
            "/v1/ws lacks `{needle}`:\n{behaviour}"
        );
    }
    // The socket authenticates with its first frame: the API routes `auth`.
    assert!(resource(&t, "WebSocketAuthRoute").contains("RouteKey: auth"));
}

/// The function the `/v1/ws` behaviour runs, executed as CloudFront would
/// (`handler(event)`, by node): the path becomes the stage, the query and
/// headers pass unchanged.
#[test]
fn the_dashboards_websocket_path_function_rewrites_v1_ws_to_the_stage() {
    let t = template();
    let f = resource(&t, "DashboardWebSocketPath");
    assert!(f.contains("Runtime: cloudfront-js-2.0"), "{f}");
    assert!(f.contains("AutoPublish: true"), "{f}");
    let code = f
        .lines()
        .skip_while(|l| !l.contains("FunctionCode: !Sub |"))
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n")
        .replace("${Stage}", "prod");
    let script = format!(
        "{code}\nconst out = handler({{ request: {{ method: 'GET', uri: '/v1/ws', \
         querystring: {{ x: {{ value: '1' }} }}, headers: {{ upgrade: {{ value: 'websocket' }} }} }} }});\n\
         process.stdout.write(JSON.stringify(out));"
    );
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(&script)
        .output()
        .expect("node (scripts/setup installs Node.js)");
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    let request: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        request,
        serde_json::json!({"method": "GET", "uri": "/prod", "querystring": {"x": {"value": "1"}},
                           "headers": {"upgrade": {"value": "websocket"}}})
    );
}

/// The connection table as the template declares it, created by moto's
/// CloudFormation (`infra/check/moto_stack.py`, the whole stack): the
/// registry's every operation works on it — live and sequenced
/// subscriptions, the site, token and owner indexes.
#[tokio::test]
async fn the_registry_works_on_the_table_the_template_creates_in_moto() {
    use aws_config::Region;
    use aws_sdk_dynamodb::config::Credentials;
    use plantd_proxy::aws::Registry;
    use plantd_proxy::aws::registry::{Interest, Subscribed};
    use plantd_shared::subject::Site;
    use plantd_shared::topic::Filter;

    let moto = plantd_testkit::Moto::start().await;
    let infra = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra");
    let out = tokio::process::Command::new(plantd_testkit::tool("python"))
        .arg(format!("{infra}/check/moto_stack.py"))
        .arg(format!("{infra}/template.yaml"))
        .arg(serde_json::json!({"Stage": "test"}).to_string())
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .output()
        .await
        .expect("run moto_stack.py");
    assert!(
        out.status.success(),
        "moto_stack.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stack: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(stack["status"], "CREATE_COMPLETE", "{stack}");

    let config = plantd_shared::aws::config_loader()
        .endpoint_url(moto.endpoint())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await;
    let reg = Registry::new(
        aws_sdk_dynamodb::Client::new(&config),
        "plantd-test-ws-connections",
    );
    let c = crate::aws_common::claims("alice", 600, &[("plant-1", &["#"])]);
    reg.connect("c1", &c).await.expect("connect");
    let site = Site::new("plant-1").expect("site");
    let filter = Filter::new("line1/#").expect("filter");
    let interest = Interest {
        site: &site,
        site_org: "acme",
        filter: &filter,
    };
    assert_eq!(
        reg.subscribe("c1", "live", &interest, c.exp, 10)
            .await
            .expect("subscribe"),
        Subscribed::Added
    );
    let start = plantd_proxy::routes::resume::Start {
        sequence: 7,
        missed: true,
    };
    assert_eq!(
        reg.subscribe_sequenced("c1", "seq", &interest, c.exp, 10, start)
            .await
            .expect("subscribe"),
        Subscribed::Added
    );
    assert!(reg.claim("c1", "seq", "p1").await.expect("claim"));
    let by_site = reg.by_site(&site).await.expect("by-site");
    assert_eq!(
        by_site.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["live"],
        "sequenced subscriptions stay out of by-site"
    );
    assert_eq!(reg.by_jti(&c.jti).await.expect("by-jti"), ["c1"]);
    assert_eq!(
        reg.owned().await.expect("by-owner"),
        [("p1".to_owned(), "c1".to_owned())]
    );
    let seq = reg.sequenced("c1", "seq").await.expect("get").expect("seq");
    assert_eq!(
        (seq.from_sequence, seq.missed, seq.owner.as_deref()),
        (7, true, Some("p1"))
    );
    assert_eq!(
        reg.unsubscribe_owned("c1", "seq")
            .await
            .expect("unsubscribe"),
        Some(Some("p1".to_owned()))
    );
    assert_eq!(reg.remove("c1").await.expect("remove"), 2);
}
