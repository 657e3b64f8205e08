//! `plantd`: run and talk to the plantd stack.

mod args;
mod dispatch;
mod input;

use std::process::ExitCode;

use clap::Parser as _;

use crate::args::Cli;

/// mimalloc, as in `plantd-edge`: `plantd up` and `plantd functions` run
/// the trigger and its handlers in this process, which allocate a record
/// per log line or reading; measured in `docs/performance.md` ("Logs").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    plantd_shared::logging::init("plantd");
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plantd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch::run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plantd: {e:#}");
            match e.downcast_ref::<plantd_cli::session::CliError>() {
                Some(c) => ExitCode::from(c.kind as u8),
                None => ExitCode::FAILURE,
            }
        }
    }
}
