//! The edge as a site engineer installs it: the `.deb` (`cargo deb`, the
//! metadata in `broker-edge/Cargo.toml`, the files in `packaging/edge/`).
//!
//! * The example `/etc/plantd/edge.toml` documents every configuration key
//!   (no more, no fewer: it is compared with [`Config`]'s fields) and, as
//!   shipped and with every key uncommented, is a valid configuration.
//! * The package built around the debug binary (`cargo deb --no-build`)
//!   holds the binary, the hardened systemd unit, the conffile, the user
//!   and the maintainer scripts; `systemd-analyze verify` accepts the unit
//!   in the unpacked root; the binary started with the unit's `ExecStart`
//!   arguments and the installed config (edited as `docs/install-edge.md`
//!   says) takes a QoS 1 publish from `mosquitto_pub` into JetStream, and
//!   stops with exit 0 on the unit's `KillSignal`.
//!
//! `scripts/package-edge` builds the shipped (static, stripped) packages
//! and also runs `lintian` on them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::Duration;

use plantd_edge::Config;
use plantd_shared::process::ManagedProcess;
use plantd_testkit::{Nats, eventually, http, tool};
use tokio::process::Command;

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The example configuration the package installs as a conffile.
fn example() -> String {
    let path = root().join("packaging/edge/edge.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The example with every `# key = value` line uncommented.
fn uncommented(text: &str) -> String {
    let is_key = |s: &str| {
        s.split_once('=').is_some_and(|(k, _)| {
            let k = k.trim();
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
    };
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if is_key(rest) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Dotted paths of every leaf key of a JSON object (nested objects are
/// tables; `None` fields are there as `null`).
fn json_keys(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            let path = format!("{prefix}{k}");
            if v.is_object() {
                json_keys(v, &format!("{path}."), out);
            } else {
                out.insert(path);
            }
        }
    }
}

/// Dotted paths of every leaf key of a TOML table.
fn toml_keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(t) = v {
        for (k, v) in t {
            let path = format!("{prefix}{k}");
            if v.is_table() {
                toml_keys(v, &format!("{path}."), out);
            } else {
                out.insert(path);
            }
        }
    }
}

#[test]
fn example_config_documents_every_key_and_is_valid() {
    let text = example();
    let shipped: Config = toml::from_str(&text).expect("the shipped edge.toml parses");
    assert_eq!(
        shipped.data_dir.as_deref(),
        Some(Path::new("/var/lib/plantd")),
        "the unit's StateDirectory"
    );
    let all = uncommented(&text);
    toml::from_str::<Config>(&all)
        .unwrap_or_else(|e| panic!("edge.toml with every key uncommented: {e}"));

    let mut fields = BTreeSet::new();
    json_keys(
        &serde_json::to_value(Config::default()).expect("config as JSON"),
        "",
        &mut fields,
    );
    let mut documented = BTreeSet::new();
    toml_keys(
        &toml::from_str::<toml::Value>(&all).expect("TOML"),
        "",
        &mut documented,
    );
    let missing: Vec<_> = fields.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&fields).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "packaging/edge/edge.toml is out of step with broker-edge/src/config.rs: \
         keys not documented {missing:?}, keys that do not exist {unknown:?}"
    );
}

/// Runs a command to completion; its output, or a panic with it.
fn run(cmd: &mut StdCommand) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

/// The value of `key=` lines in a unit file's text.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// Builds the `.deb` around the debug binary this test run built (no
/// second compile) into `out`, and returns its path.
fn build_deb(out: &Path) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_plantd-edge"));
    let profile_dir = bin.parent().expect("target/debug");
    run(StdCommand::new(tool("cargo-deb"))
        .current_dir(root())
        .env("CARGO_TARGET_DIR", profile_dir.parent().expect("target"))
        .args([
            "-p",
            "plantd-edge",
            "--no-build",
            "--no-strip",
            "--profile",
            "dev",
            "--fast",
            "--quiet",
            "--output",
        ])
        .arg(out));
    let debs: Vec<_> = std::fs::read_dir(out)
        .expect("output dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one .deb in {}: {debs:?}", out.display());
    debs[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deb_installs_and_the_unit_s_command_publishes_through_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(dir.path());
    let sysroot = dir.path().join("root");
    let control = dir.path().join("control");
    run(StdCommand::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&sysroot));
    run(StdCommand::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control));

    // What dpkg will do with it.
    let fields = run(StdCommand::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(fields.contains("Package: plantd-edge"), "{fields}");
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert!(
        conffiles.lines().any(|l| l == "/etc/plantd/edge.toml"),
        "edge.toml is a conffile (an upgrade keeps the site's edits): {conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(
        postinst.contains("systemd-sysusers") && postinst.contains("plantd-edge.conf"),
        "postinst creates the plantd user: {postinst}"
    );
    let sysusers = std::fs::read_to_string(sysroot.join("usr/lib/sysusers.d/plantd-edge.conf"))
        .expect("sysusers.d entry");
    assert!(sysusers.contains("u plantd "), "{sysusers}");

    // The unit: hardened, as the plantd user, state in /var/lib/plantd.
    let unit_path = ["lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .map(|d| sysroot.join(d).join("plantd-edge.service"))
        .find(|p| p.exists())
        .expect("the unit is installed");
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    for (key, want) in [
        ("User", "plantd"),
        ("StateDirectory", "plantd"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("KillSignal", "SIGTERM"),
        ("StandardOutput", "journal"),
    ] {
        assert_eq!(unit_values(&unit, key), [want], "{key}= in {unit}");
    }
    // `verify --root` resolves the unit's dependencies (sysinit.target,
    // network-online.target, ...) and ExecReload's /bin/kill in the root:
    // lend it the host's systemd units and a merged /usr, as on Debian.
    let units = unit_path.parent().expect("unit dir");
    for entry in std::fs::read_dir("/usr/lib/systemd/system").expect("the host's systemd units") {
        let entry = entry.expect("unit entry");
        let to = units.join(entry.file_name());
        if !to.exists() && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), to).expect("copy a systemd unit");
        }
    }
    std::fs::copy("/usr/bin/kill", sysroot.join("usr/bin/kill")).expect("kill(1)");
    std::os::unix::fs::symlink("usr/bin", sysroot.join("bin")).expect("merged /usr");
    run(StdCommand::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", sysroot.display()))
        .arg(&unit_path));

    // The site engineer's edit of the conffile (docs/install-edge.md):
    // site, NATS; here also loopback ports and the scratch root's paths.
    let nats = Nats::start_with_streams().await;
    let state = sysroot.join("var/lib/plantd");
    std::fs::create_dir_all(&state).expect("StateDirectory");
    let conf_path = sysroot.join("etc/plantd/edge.toml");
    let shipped = std::fs::read_to_string(&conf_path).expect("installed edge.toml");
    let edited = shipped
        .replace("# site = \"local\"", "site = \"packaged-1\"")
        .replace(
            "data_dir = \"/var/lib/plantd\"",
            &format!("data_dir = {:?}", state.display().to_string()),
        )
        .replace(
            "mqtt_listen = \"0.0.0.0:1883\"",
            "mqtt_listen = \"127.0.0.1:0\"",
        )
        .replace(
            "# http_listen = \"127.0.0.1:9090\"",
            "http_listen = \"127.0.0.1:0\"",
        )
        .replace("# allow_anonymous = false", "allow_anonymous = true")
        .replace("# org = \"acme\"", "org = \"acme\"")
        .replace(
            "# nats_url = \"tls://nats-1.example.com:4222,tls://nats-2.example.com:4222\"",
            &format!("nats_url = {:?}", nats.url()),
        );
    assert_ne!(edited, shipped);
    std::fs::write(&conf_path, &edited).expect("edit edge.toml");

    // ExecStart, with its absolute paths inside the scratch root.
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1, "{unit}");
    let argv: Vec<PathBuf> = exec[0]
        .split_whitespace()
        .map(|a| match a.strip_prefix('/') {
            Some(abs) => sysroot.join(abs),
            None => PathBuf::from(a),
        })
        .collect();
    assert_eq!(argv[0], sysroot.join("usr/bin/plantd-edge"));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PLANTD_LOG", "info")
        .env("PLANTD_LOG_SHIP", "off");
    let mut addrs = None;
    let mut edge =
        ManagedProcess::spawn("packaged plantd-edge", cmd, Duration::from_secs(30), |l| {
            if l.contains("plantd-edge listening") {
                let field = |name: &str| -> Option<std::net::SocketAddr> {
                    let start = l.find(&format!("{name}="))? + name.len() + 1;
                    let rest = &l[start..];
                    rest[..rest.find(' ').unwrap_or(rest.len())].parse().ok()
                };
                addrs = field("mqtt").zip(field("http"));
            }
            addrs.is_some()
        })
        .await
        .expect("the packaged edge starts with the unit's command line");
    let (mqtt, web) = addrs.expect("listening addresses");
    let health = http::get(web.port(), "/healthz").await.expect("/healthz");
    assert_eq!(health.status, 200, "{}", health.text());

    // A device publishes through it; the message reaches JetStream.
    run(StdCommand::new(tool("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &mqtt.port().to_string()])
        .args([
            "-i",
            "packaged-device",
            "-q",
            "1",
            "-t",
            "line/1/temp",
            "-m",
            "21.5",
        ]));
    let js = nats.jetstream().await;
    let subject = "plantd.packaged-1.up.line.1.temp";
    let stored = eventually(Duration::from_secs(20), "the message in JetStream", || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("PLANTD_TELEMETRY").await.ok()?;
            stream.info().await.ok()?;
            stream.get_last_raw_message_by_subject(subject).await.ok()
        }
    })
    .await;
    assert_eq!(&stored.payload[..], b"21.5");
    assert!(
        state.join("journal").is_dir(),
        "the journal lives in the StateDirectory"
    );

    // The unit's KillSignal: a clean stop.
    let status = edge.terminate(Duration::from_secs(30)).await;
    assert!(
        status.is_ok_and(|s| s.success()),
        "exit on SIGTERM: {:?}",
        edge.tail()
    );
}
