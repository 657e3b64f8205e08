//! `plantd-edge`: parse flags, load the config file, run the broker until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;

use clap::Parser;
use plantd_edge::Config;
use plantd_edge::config::Flags;

/// mimalloc: the broker allocates small objects at a high rate on several
/// threads (see `docs/performance.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// plantd's edge broker (MQTT 3.1.1 and 5.0). Configuration: defaults,
/// then `--config FILE`, then `PLANTD_*` variables, then these flags.
#[derive(Debug, Parser)]
#[command(name = "plantd-edge", version, about)]
struct Args {
    /// TOML configuration file; `PLANTD_*` variables and flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Every other flag: one configuration key each.
    #[command(flatten)]
    flags: Flags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // PLANTD_LOG (or RUST_LOG) chooses what is printed; PLANTD_LOG_SHIP
    // (default warn) what is journaled as `$plantd/log/plantd/edge`.
    // Before the connections' memory is touched: no transparent huge
    // pages (resident memory per idle connection, `plantd_edge::memory`).
    let small_pages = plantd_edge::memory::small_pages_only();
    plantd_shared::logging::init("plantd-edge");
    plantd_shared::log_ship::start(plantd_shared::log_ship::EDGE);
    if small_pages {
        tracing::debug!("transparent huge pages off for this process");
    } else {
        tracing::info!(
            "transparent huge pages could not be turned off: idle connections may keep more memory resident"
        );
    }
    let args = Args::parse();
    let config = Config::load(args.config.as_deref(), &args.flags)?;
    tracing::info!(site = %config.site, "starting plantd-edge");
    plantd_edge::edge::run(config, plantd_shared::shutdown::terminated(), |listening| {
        listening.log()
    })
    .await?;
    Ok(())
}
