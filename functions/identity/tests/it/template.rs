//! `infra/template.yaml` agrees with the code and the build: the variable
//! the binary reads names the secret, the package path is where
//! `cargo lambda build --x86-64 --output-format zip` writes, and runtime and
//! architecture match that build. (`cfn-lint` checks the template itself in
//! `scripts/test`.)

use plantd_identity::secrets::SECRET_ID_ENV;

fn template() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn template_matches_the_binary_and_the_package() {
    let t = template();
    for needle in [
        format!("{SECRET_ID_ENV}: !Ref IdentitySecret"),
        "CodeUri: ../target/lambda/plantd-identity/bootstrap.zip".to_owned(),
        "Runtime: provided.al2023".to_owned(),
        "Architectures: [!Ref Architecture]".to_owned(),
        "Handler: bootstrap".to_owned(),
        "Path: /.well-known/jwks.json".to_owned(),
        "Path: /v1/{proxy+}".to_owned(),
    ] {
        assert!(t.contains(&needle), "infra/template.yaml lacks `{needle}`");
    }
}

#[test]
fn the_identity_role_reads_and_writes_only_its_own_secret() {
    let t = template();
    // One Secrets Manager permission per role that has a secret: identity
    // on its own; the proxy's three roles (REST, WebSocket, the fan-out
    // task) on the proxy's — the REST one also on the alerts secret (the
    // channel key, decision 0062), as the notifier.
    assert_eq!(
        t.matches("secretsmanager:").count(),
        6,
        "Secrets Manager permissions: identity reads and (key rotation) writes its own, the proxy's three roles read the proxy's, the notifier reads the alerts secret"
    );
    assert_eq!(
        t.matches(
            "Action: secretsmanager:GetSecretValue\n                Resource: !Ref ProxySecret"
        )
        .count(),
        2
    );
    assert!(t.contains(
        "Action: secretsmanager:GetSecretValue\n                Resource:\n                  - !Ref ProxySecret\n                  - !Ref AlertsSecret"
    ));
    assert!(t.contains(
        "Action: secretsmanager:GetSecretValue\n                Resource: !Ref AlertsSecret"
    ));
    assert!(t.contains(
        "Action:\n                  - secretsmanager:GetSecretValue\n                  - secretsmanager:PutSecretValue\n                Resource: !Ref IdentitySecret"
    ));
    assert!(
        !t.contains("Resource: \"*\"") && !t.contains("Resource: '*'"),
        "no wildcard resources"
    );
}
