//! `nats-server -t` tells a broken config from a good one, and the edge's
//! systemd unit runs the edge with its config file. The NATS configurations
//! of `infra/nats/` themselves are checked — and run as clusters — by
//! `tests/cluster` (`configs.rs`).

use std::path::PathBuf;
use std::process::Command;

use plantd_testkit::tool;

fn infra(path: &str) -> PathBuf {
    plantd_shared::tools::workspace_root()
        .join("infra")
        .join(path)
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
