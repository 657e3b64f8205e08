//! What the `plantd` command-line tests share: `plantd up` as a child
//! process, and where its start-up summary says everything is; a `plantd`
//! profile logged in to it ([`up_logged_in`]) and a JetStream context on
//! its NATS server ([`Up::jetstream`]).

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use tokio::process::Command;

pub mod sdk;

/// A running `plantd up` (killed on drop) and the addresses its summary
/// printed.
pub struct Up {
    /// The `plantd up` process.
    pub process: ManagedProcess,
    /// `nats://…`, from the `nats` line.
    pub nats: Option<String>,
    /// `http://…`, from the `functions` line.
    pub functions: Option<String>,
    /// `mqtt://…`, from the `edge` line.
    pub mqtt: Option<String>,
}

/// The first word of `line` that starts with `prefix`.
fn word(line: &str, prefix: &str) -> Option<String> {
    line.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .map(str::to_owned)
}

/// The port at the end of an address such as `http://127.0.0.1:8080`.
pub fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a port in {address}"))
}

impl Up {
    /// Runs `plantd up --data-dir <data_dir>` with `args` and waits until
    /// it says `plantd is up`.
    ///
    /// # Panics
    /// When it does not become ready within a minute.
    pub async fn start(data_dir: &Path, args: &[&str]) -> Up {
        Up::start_with_env(data_dir, args, &[]).await
    }

    /// [`Up::start`] with these `PLANTD_*` variables set (its
    /// configuration, e.g. `PLANTD_HTTP__ACCESS_TOKEN_TTL_SECS`).
    pub async fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Up {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantd"));
        cmd.envs(env.iter().copied());
        cmd.arg("up").arg("--data-dir").arg(data_dir).args(args);
        let (mut nats, mut functions, mut mqtt) = (None, None, None);
        let process = ManagedProcess::spawn("plantd up", cmd, Duration::from_secs(60), |line| {
            let entry = line.trim_start();
            if entry.starts_with("nats ") {
                nats = word(line, "nats://");
            }
            if entry.starts_with("functions ") {
                functions = word(line, "http://");
            }
            if entry.starts_with("edge ") {
                mqtt = word(line, "mqtt://");
            }
            line.starts_with("plantd is up")
        })
        .await
        .expect("plantd up becomes ready");
        Up {
            process,
            nats,
            functions,
            mqtt,
        }
    }

    /// [`Up::start`] with every listener on a free loopback port.
    pub async fn on_free_ports(data_dir: &Path) -> Up {
        Up::on_free_ports_with_env(data_dir, &[]).await
    }

    /// [`Up::on_free_ports`] with these `PLANTD_*` variables set.
    pub async fn on_free_ports_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Up {
        Up::on_free_ports_with(data_dir, &[], env).await
    }

    /// [`Up::on_free_ports`] with `args` added to `plantd up`'s (e.g.
    /// `--app-dir`) and these `PLANTD_*` variables set.
    pub async fn on_free_ports_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Up {
        let mut all = vec![
            "--nats-port",
            "0",
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--edge-http-listen",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        Up::start_with_env(data_dir, &all, env).await
    }

    /// The functions' base URL.
    pub fn functions_url(&self) -> String {
        self.functions
            .clone()
            .expect("plantd up prints the functions URL")
    }

    /// A JetStream context on its NATS server: for storing what a device
    /// or a function would, straight on the subjects they use.
    ///
    /// # Panics
    /// When NATS cannot be reached.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let nats = self.nats.clone().expect("plantd up prints the NATS URL");
        let client = async_nats::connect(&nats)
            .await
            .unwrap_or_else(|e| panic!("connect to NATS at {nats}: {e}"));
        async_nats::jetstream::new(client)
    }
}

/// [`Up::on_free_ports_with_env`] in `data_dir`, and a `plantd`
/// configuration directory (a fresh temporary one) logged in to it as the
/// bootstrap admin with the password in `<data_dir>/admin-password`: the
/// stack, and that directory (for [`plantd`]).
///
/// # Panics
/// When the stack does not start or the login fails.
pub async fn up_logged_in(data_dir: &Path, env: &[(&str, &str)]) -> (Up, tempfile::TempDir) {
    let up = Up::on_free_ports_with_env(data_dir, env).await;
    let config = tempfile::tempdir().expect("config dir");
    login(
        config.path(),
        &up.functions_url(),
        "admin@plantd.local",
        &data_dir.join("admin-password"),
    );
    (up, config)
}

/// Runs `suite` (another language's test run, killed if dropped) to its
/// end, prints what it wrote and asserts that it succeeded: its standard
/// output. `what` names it in the failure messages.
///
/// # Panics
/// When it does not end within `within` or fails.
pub async fn suite_stdout(mut suite: Command, within: Duration, what: &str) -> String {
    let run = suite.kill_on_drop(true).output();
    let out = tokio::time::timeout(within, run)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {within:?}"))
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// The `plantd` binary with its own configuration directory (profiles and
/// tokens) and no password from the environment.
pub fn plantd(config_dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_plantd"));
    c.env("PLANTD_CONFIG_DIR", config_dir)
        .env_remove("PLANTD_PASSWORD");
    c
}

/// Runs a `plantd` command to completion.
pub fn run(c: &mut std::process::Command) -> std::process::Output {
    c.output().expect("run plantd")
}

/// Its standard output, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its standard error, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `plantd login` as `email` with the password in `password_file`,
/// asserting success.
pub fn login(config: &Path, url: &str, email: &str, password_file: &Path) {
    let out = run(plantd(config)
        .args(["login", "--url", url, "--email", email, "--password-file"])
        .arg(password_file));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// POSTs `body` as JSON to `up`'s functions, with bearer `token` if any:
/// (status, the JSON answer or `Null`).
pub async fn post_json(
    up: &Up,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    let answer = plantd_testkit::http::request(
        port_of(&up.functions_url()),
        "POST",
        path,
        &headers,
        body.to_string().as_bytes(),
    )
    .await
    .expect("request");
    let v = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
    (answer.status, v)
}

/// Logs in over HTTP as the bootstrap admin (its password in
/// `<data_dir>/admin-password`): its access token.
///
/// # Panics
/// When the login is refused.
pub async fn admin_token(up: &Up, data_dir: &Path) -> String {
    let password = std::fs::read_to_string(data_dir.join("admin-password")).expect("password");
    let (status, login) = post_json(
        up,
        "/v1/auth/login",
        None,
        &serde_json::json!({"email": "admin@plantd.local", "password": password.trim()}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    login["access_token"].as_str().expect("token").to_owned()
}

/// Registers device `name` on site `local` as `admin` (an access token),
/// allowed to publish on the filters `publish` and subscribe to
/// `subscribe`, and gets its token: `(client id, access token)`.
///
/// # Panics
/// When a step is refused.
pub async fn device(
    up: &Up,
    admin: &str,
    name: &str,
    publish: &[&str],
    subscribe: &[&str],
) -> (String, String) {
    let (status, creds) = post_json(
        up,
        "/v1/devices",
        Some(admin),
        &serde_json::json!({"name": name, "site": "local", "publish": publish, "subscribe": subscribe}),
    )
    .await;
    assert_eq!(status, 201, "{creds}");
    let id = creds["client_id"].as_str().expect("client id").to_owned();
    let (status, token) = post_json(
        up,
        "/v1/auth/token",
        None,
        &serde_json::json!({"grant_type": "client_credentials", "client_id": id, "client_secret": creds["client_secret"]}),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let token = token["access_token"].as_str().expect("token").to_owned();
    (id, token)
}

/// [`device`] `name`, allowed to publish on `publish` and to subscribe to
/// nothing, registered as the bootstrap admin ([`admin_token`]).
///
/// # Panics
/// When a step is refused.
pub async fn register_device(
    up: &Up,
    data_dir: &Path,
    name: &str,
    publish: &[&str],
) -> (String, String) {
    let admin = admin_token(up, data_dir).await;
    device(up, &admin, name, publish, &[]).await
}

/// Connects device `id` to `up`'s edge over MQTT with its `token` and
/// waits for the CONNACK: the client, and the task polling its event loop
/// (it ends when the connection does).
///
/// # Panics
/// When the edge refuses the connection.
pub async fn connect_device(
    up: &Up,
    id: &str,
    token: &str,
) -> (rumqttc::AsyncClient, tokio::task::JoinHandle<()>) {
    use rumqttc::{Event, Packet};
    let address = up
        .mqtt
        .clone()
        .expect("plantd up prints the edge's address");
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port_of(&address));
    opts.set_credentials(id, token);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
    loop {
        if let Event::Incoming(Packet::ConnAck(ack)) = events.poll().await.expect("connects") {
            assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
            break;
        }
    }
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    (client, pump)
}

/// A small deterministic generator (xorshift) for crash tests: seeded per
/// run (the seed is printed), so a failing run can be replayed.
pub struct Rng(pub u64);

impl Rng {
    /// This run's seed, from the clock (odd, so never zero), printed so
    /// that a failing run can be replayed with it.
    pub fn run_seed() -> u64 {
        let seed = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 | 1;
        println!("seed {seed}");
        seed
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `lo..hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// A NATS server with plantd's streams ([`plantd_testkit::Nats`]) on
/// which site `site` is registered to organisation `org`: the server, and
/// a JetStream context on it.
///
/// # Panics
/// When the server does not start or the registration fails.
pub async fn nats_with_site(
    site: &str,
    org: &str,
) -> (plantd_testkit::Nats, async_nats::jetstream::Context) {
    use plantd_shared::sites::Sites;
    use plantd_shared::subject::Site;

    let nats = plantd_testkit::Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    Sites::open(&js)
        .await
        .expect("sites")
        .register(&Site::new(site).expect("site"), org, "")
        .await
        .expect("register the site");
    (nats, js)
}

/// A task that keeps killing `plantd functions` at pseudo-random points:
/// it starts a host ([`functions_host`]), kills it with SIGKILL after
/// 150–650 ms ([`Rng`] from the seed), starts another, and so on until
/// [`Killer::stop`]; then it leaves one host running.
pub struct Killer {
    stop: tokio::sync::watch::Sender<bool>,
    killed: std::sync::Arc<std::sync::atomic::AtomicU32>,
    task: tokio::task::JoinHandle<(ManagedProcess, u32)>,
}

impl Killer {
    /// Starts killing hosts run against `nats_url` with `env` on top.
    pub fn start(nats_url: &str, env: &[(&str, &str)], seed: u64) -> Killer {
        use std::sync::atomic::Ordering;

        let url = nats_url.to_owned();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let killed = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = killed.clone();
        let task = tokio::spawn(async move {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut rng = Rng(seed);
            let mut host = functions_host(&url, &env).await;
            let mut kills = 0u32;
            loop {
                let pause = Duration::from_millis(rng.between(150, 650));
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                host.kill().await.expect("SIGKILL the host");
                kills += 1;
                count.store(kills, Ordering::SeqCst);
                host = functions_host(&url, &env).await;
            }
            (host, kills)
        });
        Killer { stop, killed, task }
    }

    /// How many hosts it has killed so far.
    pub fn kills(&self) -> u32 {
        self.killed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops killing: the host left running, and how many were killed.
    ///
    /// # Panics
    /// When the task failed (a host did not start or could not be killed).
    pub async fn stop(self) -> (ManagedProcess, u32) {
        self.stop.send(true).expect("stop the killer");
        self.task.await.expect("the killer task")
    }
}

/// The channel key file the `plantd functions` hosts of this test binary
/// share ([`functions_host`]), under cargo's scratch directory: a test
/// that stores webhook channels seals them with its key
/// (`plantd_alerts::notify::keys::open_file`).
pub fn channel_key_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "plantd-cli-tests-{}-channel-keys.json",
        std::process::id()
    ))
}

/// Starts `plantd functions` against `nats_url` (ack wait 1 s so a killed
/// host's items come back quickly, no log shipping, the channel key of
/// [`channel_key_file`]) with `env` on top; waits for its "functions
/// ready" line.
pub async fn functions_host(nats_url: &str, env: &[(&str, &str)]) -> ManagedProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantd"));
    cmd.args([
        "functions",
        "--nats-url",
        nats_url,
        "--http-listen",
        "127.0.0.1:0",
    ])
    .env("PLANTD_ACK_WAIT_MS", "1000")
    .env("PLANTD_LOG_SHIP", "off")
    .env("PLANTD_CHANNEL_KEY_FILE", channel_key_file());
    for (k, v) in env {
        cmd.env(k, v);
    }
    ManagedProcess::spawn("plantd functions", cmd, Duration::from_secs(60), |line| {
        line.starts_with("functions ready")
    })
    .await
    .expect("plantd functions starts")
}
