//! `myco`, the operator's tool for a Myco fleet. Commands arrive with the issues that build them;
//! until then it answers only `--help` and `--version`, and refuses anything else with exit code 2.

use std::process::ExitCode;

const HELP: &str = "\
myco: the operator's tool for a Myco fleet

Usage: myco [OPTIONS]

Options:
  -h, --help     Print this help and exit
  -V, --version  Print the version and exit
";

/// A bad command line exits with 2, as in grep, bash builtins and clap, so that scripts can tell a
/// usage mistake from a failure (1).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if args.contains(["-V", "--version"]) {
        println!("myco {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match args.finish().first().map(|arg| arg.to_string_lossy()) {
        None => eprint!("{HELP}"),
        Some(arg) if arg.starts_with('-') => {
            eprintln!("myco: unknown option '{arg}'; see 'myco --help'")
        }
        Some(arg) => eprintln!("myco: unknown command '{arg}'; see 'myco --help'"),
    }
    ExitCode::from(EXIT_USAGE)
}
