//! The Lambda runtime API emulator of `cargo lambda watch --only-lambda-apis`,
//! under which a test runs a function binary it built itself (no nested
//! cargo build).

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use tokio::process::Command;

use crate::http;

/// `cargo lambda watch --only-lambda-apis` on a loopback port. Dropping it
/// kills the emulator.
///
/// It serves the runtime API a function polls (`/.rt/<function>`), function
/// URLs (`/lambda-url/<function>/…`, as API Gateway HTTP API v2 events) and
/// raw invokes (`/2015-03-31/functions/<function>/invocations`, what
/// `cargo lambda invoke --data-file` does). The invoke endpoint only accepts
/// the names of the workspace's binaries.
#[derive(Debug)]
pub struct LambdaWatch {
    /// The emulator; killed on drop.
    process: ManagedProcess,
    /// Where it serves the runtime API, function URLs and invokes.
    port: u16,
}

/// A port that was free a moment ago. `cargo lambda` cannot bind port 0
/// (it takes 0 as "unset" and uses 9000), so the fixture chooses; a port
/// lost to another process in between is detected by
/// [`LambdaWatch::answers`] and another one tried.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl LambdaWatch {
    /// Starts the emulator in `package_dir` (it reads the workspace
    /// metadata; pass the test crate's `env!("CARGO_MANIFEST_DIR")`) and
    /// waits until it serves the runtime API.
    ///
    /// # Panics
    /// When `cargo-lambda` is not installed (run `scripts/setup`) or five
    /// ports in a row are lost or never answer.
    pub async fn start(package_dir: impl AsRef<Path>) -> Self {
        let bin = crate::tool("cargo-lambda");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--ignore-changes",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
            ])
            .current_dir(package_dir.as_ref());
            let process =
                ManagedProcess::spawn("cargo lambda watch", cmd, Duration::from_secs(60), |line| {
                    line.contains("starting Runtime server")
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let this = Self { process, port };
            match this.answers().await {
                Ok(()) => return this,
                Err(why) => failures.push(why),
            }
        }
        panic!("cargo lambda watch never served: {failures:#?}");
    }

    /// Waits until the port answers as a Lambda runtime API: the route
    /// `/2018-06-01/runtime/init/error` exists and only accepts POST. If
    /// the emulator gives up (it logs "terminating" and exits when the port
    /// is taken) or something else answers, this port is abandoned.
    async fn answers(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .process
                .tail()
                .iter()
                .any(|l| l.contains("terminating"))
            {
                return Err(format!(
                    "port {} lost: {:?}",
                    self.port,
                    self.process.tail()
                ));
            }
            match http::get(self.port, "/.rt/2018-06-01/runtime/init/error").await {
                Ok(r) if r.status == 405 && r.header("allow") == Some("POST") => return Ok(()),
                Ok(r) => return Err(format!("port {} is someone else's: {r:?}", self.port)),
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(format!("port {} never answered: {e}", self.port));
                }
                // Not listening yet: the bind follows the log line within
                // milliseconds; poll the port, briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// The port the emulator serves on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The emulator's recent output.
    pub fn tail(&self) -> Vec<String> {
        self.process.tail()
    }

    /// `AWS_LAMBDA_RUNTIME_API` for `function`.
    pub fn runtime_api(&self, function: &str) -> String {
        format!("http://127.0.0.1:{}/.rt/{function}", self.port)
    }

    /// A command for function binary `bin` registered as `function`, with
    /// the environment Lambda gives a function (and nothing else), test
    /// credentials, region `us-east-1`, every AWS service at `aws_endpoint`
    /// (e.g. [`crate::Moto::endpoint`]) and `PLANTD_LOG=info`. Add the
    /// function's own configuration and spawn it.
    pub fn function_command(
        &self,
        bin: impl AsRef<OsStr>,
        function: &str,
        aws_endpoint: &str,
    ) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", self.runtime_api(function))
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", aws_endpoint)
            .env("PLANTD_LOG", "info");
        cmd
    }

    /// An HTTP API call through `function`'s function URL, with a bearer
    /// `token` if given.
    ///
    /// # Panics
    /// When the emulator does not answer.
    pub async fn call(
        &self,
        function: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> http::Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", content_type)];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let url = format!("/lambda-url/{function}{path}");
        http::request(self.port, method, &url, &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// Invokes `function` with a raw JSON `event`; the answer must come
    /// within 30 s and be 200, and its body is the function's result.
    ///
    /// # Panics
    /// When there is no answer in time or it is not 200.
    pub async fn invoke(&self, function: &str, event: &str) -> http::Response {
        let url = format!("/2015-03-31/functions/{function}/invocations");
        let call = http::request(
            self.port,
            "POST",
            &url,
            &[("content-type", "application/json")],
            event.as_bytes(),
        );
        let resp = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .unwrap_or_else(|_| {
                panic!("POST {url}: no answer in 30 s; emulator: {:?}", self.tail())
            })
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp
    }
}
