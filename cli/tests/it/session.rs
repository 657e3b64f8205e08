//! The `plantd` command line against `plantd up`: log in (token file 0600),
//! whoami, state set/get with optimistic concurrency, commands, logout —
//! with exit codes scripts can rely on.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;

use common::{Up, plantd, run, stdout};

#[tokio::test]
async fn login_state_command_logout_from_the_command_line() {
    let data = tempfile::tempdir().expect("tmp");
    let up = Up::on_free_ports(data.path()).await;
    let url = up.functions_url();
    let config = tempfile::tempdir().expect("config dir");
    let pw = data.path().join("admin-password");

    let out = run(plantd(config.path())
        .args([
            "login",
            "--url",
            &url,
            "--email",
            "admin@plantd.local",
            "--password-file",
        ])
        .arg(&pw));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_file = config.path().join("tokens").join("default.json");
    let mode = std::fs::metadata(&token_file)
        .expect("token file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "tokens are private");

    let out = run(plantd(config.path()).args(["whoami", "--json"]));
    assert!(out.status.success());
    assert!(stdout(&out).contains("superadmin"), "{}", stdout(&out));

    assert!(
        run(plantd(config.path()).args(["state", "scopes", "--create", "line1"]))
            .status
            .success()
    );
    let out = run(plantd(config.path()).args(["state", "set", "line1", "speed", "42"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(plantd(config.path()).args(["state", "get", "line1", "speed"]));
    assert_eq!(stdout(&out).trim(), "42");
    let out = run(plantd(config.path()).args([
        "state",
        "set",
        "line1",
        "speed",
        "43",
        "--if-match",
        "999",
    ]));
    assert_eq!(
        out.status.code(),
        Some(6),
        "a lost compare-and-set exits 6: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(plantd(config.path()).args(["state", "get", "line1", "missing"]));
    assert_eq!(out.status.code(), Some(5), "not found exits 5");

    let out = run(plantd(config.path()).args(["command", "local", "valve/open", "1", "--json"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("PLANTD_COMMANDS"));

    let wrong = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(wrong.path(), "not the password").expect("write");
    let other = tempfile::tempdir().expect("other config");
    let out = run(plantd(other.path())
        .args([
            "login",
            "--url",
            &url,
            "--email",
            "admin@plantd.local",
            "--password-file",
        ])
        .arg(wrong.path()));
    assert_eq!(out.status.code(), Some(3), "refused credentials exit 3");

    assert!(run(plantd(config.path()).arg("logout")).status.success());
    let out = run(plantd(config.path()).arg("whoami"));
    assert_eq!(out.status.code(), Some(3), "after logout: not logged in");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plantd login"),
        "says what to do next"
    );
}
