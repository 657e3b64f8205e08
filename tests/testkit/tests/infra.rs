//! The NATS configurations in `infra/` are accepted by the real nats-server
//! (`nats-server -t`), with the environment variables they document.

use std::path::PathBuf;
use std::process::Command;

use plantd_testkit::tool;

fn infra(path: &str) -> PathBuf {
    plantd_shared::tools::workspace_root()
        .join("infra")
        .join(path)
}

fn check(conf: &str, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(tool("nats-server"))
        .arg("-t")
        .arg("-c")
        .arg(infra(conf))
        .envs(env.iter().copied())
        .output()
        .expect("run nats-server -t");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn cluster_node_config_is_valid() {
    let (ok, text) = check(
        "nats/cluster-node.conf",
        &[
            ("NATS_SERVER_NAME", "nats-1"),
            ("NATS_STORE_DIR", "/var/lib/nats"),
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("is valid"), "{text}");
}

#[test]
fn leaf_site_config_is_valid() {
    let (ok, text) = check(
        "nats/leaf-site.conf",
        &[
            ("PLANTD_SITE", "plant-1"),
            ("NATS_HUB_URL", "nats-leaf://hub.example:7422"),
            ("NATS_LEAF_CREDS", "/etc/plantd/secrets/leaf.creds"),
        ],
    );
    assert!(ok, "{text}");
}

#[test]
fn the_check_rejects_a_broken_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "jetstream {\n  store_dir: \n").expect("write");
    let out = Command::new(tool("nats-server"))
        .args(["-t", "-c"])
        .arg(&bad)
        .output()
        .expect("run nats-server -t");
    assert!(
        !out.status.success(),
        "a truncated config must not validate"
    );
}

#[test]
fn edge_unit_runs_the_edge_binary_with_a_config_file() {
    let unit = std::fs::read_to_string(infra("edge/plantd-edge.service")).expect("unit file");
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart line");
    assert!(
        exec.contains("plantd-edge") && exec.contains("--config"),
        "{exec}"
    );
    assert!(unit.contains("KillSignal=SIGTERM"));
    assert!(unit.contains("NoNewPrivileges=yes"));
}
