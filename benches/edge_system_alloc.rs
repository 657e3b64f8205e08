//! `plantd-edge` under the system allocator (glibc malloc) instead of
//! mimalloc, for one measurement: how much of the resident memory per idle
//! connection is the allocator's (issue 12). `edge_load --brokers
//! plantd,plantd-system-alloc` starts it beside the real binary; it takes
//! the same flags. Not shipped: the edge binary keeps mimalloc
//! (`broker-edge/src/main.rs`, `docs/performance.md`).
//!
//! ```sh
//! cargo bench -p plantd-edge --bench edge_system_alloc --no-run
//! cargo bench -p plantd-edge --bench edge_load -- --brokers plantd,plantd-system-alloc --scenarios storm
//! ```

use clap::Parser;
use plantd_edge::Config;
use plantd_edge::config::Flags;

/// The edge broker's flags (all of them: one configuration key each).
#[derive(Debug, Parser)]
struct Args {
    /// Every flag of `plantd-edge`.
    #[command(flatten)]
    flags: Flags,
    /// Passed by `cargo bench`: exit at once.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.bench {
        // `cargo bench` runs every bench: this one is a broker for
        // `edge_load`, not a benchmark.
        println!("edge_system_alloc: started by edge_load, nothing to do alone");
        return Ok(());
    }
    // As the real binary does.
    plantd_edge::memory::small_pages_only();
    plantd_shared::logging::init("plantd-edge");
    let config = Config::load(None, &args.flags)?;
    plantd_edge::edge::run(config, plantd_shared::shutdown::terminated(), |_| {}).await?;
    Ok(())
}
