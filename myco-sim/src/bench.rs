//! `myco-sim bench`: convergence figures for docs/benchmarks.md.

use pico_args::Arguments;

pub fn command(_args: Arguments) -> Result<u8, String> {
    Err("bench is not built yet".to_string())
}
