//! The same fixtures as Docker containers, for machines that have a Docker
//! engine (enable the `docker` feature). The default path spawns the
//! binaries from `.venv`, since plantd's build machines have no engine.

use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// nats-server with JetStream in a container.
pub struct NatsContainer {
    /// The running container; dropped → removed.
    container: ContainerAsync<GenericImage>,
    /// Host port mapped to 4222.
    port: u16,
}

impl NatsContainer {
    /// Starts `nats:<tag> -js` and waits for "Server is ready".
    ///
    /// # Panics
    /// When Docker is unavailable or the container does not start.
    pub async fn start(tag: &str) -> Self {
        let container = GenericImage::new("nats", tag)
            .with_exposed_port(ContainerPort::Tcp(4222))
            .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
            .with_cmd(["-js"])
            .start()
            .await
            .unwrap_or_else(|e| panic!("start nats container (is Docker running?): {e}"));
        let port = container
            .get_host_port_ipv4(4222)
            .await
            .unwrap_or_else(|e| panic!("nats container port: {e}"));
        Self { container, port }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The container id.
    pub fn id(&self) -> &str {
        self.container.id()
    }
}

/// The moto AWS API emulator in a container.
pub struct MotoContainer {
    /// The running container; dropped → removed.
    _container: ContainerAsync<GenericImage>,
    /// Host port mapped to 5000.
    port: u16,
}

impl MotoContainer {
    /// Starts `motoserver/moto:<tag>`.
    ///
    /// # Panics
    /// When Docker is unavailable or the container does not start.
    pub async fn start(tag: &str) -> Self {
        let container = GenericImage::new("motoserver/moto", tag)
            .with_exposed_port(ContainerPort::Tcp(5000))
            .with_wait_for(WaitFor::message_on_stderr("Running on"))
            .start()
            .await
            .unwrap_or_else(|e| panic!("start moto container (is Docker running?): {e}"));
        let port = container
            .get_host_port_ipv4(5000)
            .await
            .unwrap_or_else(|e| panic!("moto container port: {e}"));
        Self {
            _container: container,
            port,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
