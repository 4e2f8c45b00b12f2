//! `myco-d`, the daemon that runs Myco on one box (`docs/daemon.md`).

use myco_host::daemon::config::{self, Parsed, HELP};
use myco_host::daemon::Daemon;
use myco_host::flight::{Level, Logger};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: myco_host::alloc::Counting = myco_host::alloc::Counting;

/// A bad command line exits with 2, as in grep, bash builtins and clap, so that scripts can tell a
/// usage mistake from a failure (1).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let config = match config::parse(pico_args::Arguments::from_env()) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("myco-d {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("myco-d: {}", e.0);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let log = Logger::new(config.verbose);
    let daemon = match Daemon::start(&config, log) {
        Ok(d) => d,
        Err(e) => {
            log.log(Level::Error, format_args!("cannot start: {}", e.0));
            return ExitCode::FAILURE;
        }
    };
    match daemon.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log.log(Level::Error, format_args!("the event loop failed: {e}"));
            ExitCode::FAILURE
        }
    }
}
