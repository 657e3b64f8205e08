//! `nats-server -t` accepts every file in `infra/nats/` with the
//! environment its example documents (`*.env.example`; certificates made
//! by the test, since the check loads them), and refuses to start when a
//! variable is missing — nothing falls back to an open default.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use plantd_cluster_tests::{Pki, infra_nats};
use plantd_testkit::tool;

/// The variables of `infra/nats/<example>`, with the certificate and store
/// paths pointed at `pki` and `store`.
fn example_env(example: &str, pki: &Pki, store: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(infra_nats(example)).expect("the example environment");
    let mut env: BTreeMap<String, String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{example}: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    for (k, v) in [
        ("NATS_TLS_CERT", &pki.cert),
        ("NATS_TLS_KEY", &pki.key),
        ("NATS_TLS_CA", &pki.ca),
    ] {
        assert!(env.contains_key(k), "{example} documents {k}");
        env.insert(k.to_owned(), v.display().to_string());
    }
    env.insert("NATS_STORE_DIR".to_owned(), store.display().to_string());
    env
}

/// `nats-server -t -c infra/nats/<conf>` under `env` only: (passed, output).
fn check(conf: &str, env: &BTreeMap<String, String>) -> (bool, String) {
    let out = Command::new(tool("nats-server"))
        .arg("-t")
        .arg("-c")
        .arg(infra_nats(conf))
        .env_clear()
        .envs(env)
        .output()
        .expect("run nats-server -t");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Which example documents the environment of each config file.
fn example_of(conf: &str) -> &'static str {
    match conf {
        "leaf-site.conf" => "leaf-site.env.example",
        // accounts.conf is included by cluster-node.conf.
        _ => "cluster-node.env.example",
    }
}

#[test]
fn every_nats_config_passes_nats_server_t_with_its_documented_environment() {
    let pki = Pki::new();
    let store = tempfile::tempdir().expect("tempdir");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(infra_nats("")).expect("infra/nats") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".conf") {
            continue;
        }
        let env = example_env(example_of(&name), &pki, store.path());
        let (ok, text) = check(&name, &env);
        assert!(ok && text.contains("is valid"), "{name}: {text}");
        checked.push(name);
    }
    checked.sort();
    assert_eq!(
        checked,
        ["accounts.conf", "cluster-node.conf", "leaf-site.conf"],
        "every config is checked"
    );
}

#[test]
fn a_missing_variable_stops_the_server_instead_of_opening_a_default() {
    let pki = Pki::new();
    let store = tempfile::tempdir().expect("tempdir");
    for (conf, var) in [
        ("cluster-node.conf", "NATS_PLANTD_PASSWORD"),
        ("cluster-node.conf", "NATS_TLS_CERT"),
        ("cluster-node.conf", "NATS_ROUTE_PASSWORD"),
        ("leaf-site.conf", "NATS_EDGE_PASSWORD"),
    ] {
        let mut env = example_env(example_of(conf), &pki, store.path());
        env.remove(var);
        let (ok, text) = check(conf, &env);
        assert!(!ok, "{conf} without {var} must not validate: {text}");
        assert!(text.contains(var), "{conf}: the error names {var}: {text}");
    }
}

#[test]
fn no_port_listens_without_tls_and_authorisation() {
    let text = std::fs::read_to_string(infra_nats("cluster-node.conf")).expect("config");
    // The monitoring port has no authentication: it is not opened.
    for open in ["http:", "https:", "http_port", "https_port", "monitor_port"] {
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with(open)),
            "cluster-node.conf opens {open}"
        );
    }
    let blocks = ["cluster {", "gateway {", "leafnodes {"];
    for block in blocks {
        let body = &text[text.find(block).unwrap_or_else(|| panic!("{block}"))..];
        let body = &body[..body.find("\n}").expect("block end")];
        assert!(body.contains("authorization {"), "{block} authorises");
        assert!(body.contains("tls {"), "{block} is TLS");
    }
    let accounts = std::fs::read_to_string(infra_nats("accounts.conf")).expect("accounts");
    assert!(!accounts.contains("no_auth_user"), "no anonymous user");
}
