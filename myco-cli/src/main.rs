//! `myco`, the operator's tool for a Myco fleet: it makes keys, signs node certificates and
//! revocations, and signs service entries from myco.json manifests. Commands that talk to a
//! daemon arrive with the API.
//!
//! Exit codes scripts can trust: 0 done, 1 the work failed (I/O, a file in the way, a bad key
//! file), 2 the command line is wrong. Errors go to stderr as `myco: what happened; what to do`.

mod args;
mod cert;
mod files;
mod keys;
mod output;
mod sign;

use args::Error;
use pico_args::Arguments;
use std::process::ExitCode;

struct Command {
    name: &'static str,
    /// One line for `myco --help`.
    summary: &'static str,
    help: &'static str,
    run: fn(Arguments) -> Result<(), Error>,
}

/// Every command, in the order `myco --help` lists them. The top-level help is built from this
/// table, so it lists exactly the commands that exist.
const COMMANDS: [Command; 5] = [
    Command {
        name: "keygen",
        summary: "Make a new operator or node key file",
        help: keys::KEYGEN_HELP,
        run: keys::keygen,
    },
    Command {
        name: "pubkey",
        summary: "Print a key file's public key, key id and node id",
        help: keys::PUBKEY_HELP,
        run: keys::pubkey,
    },
    Command {
        name: "cert",
        summary: "Sign a certificate that admits a node to the cluster",
        help: cert::CERT_HELP,
        run: cert::cert,
    },
    Command {
        name: "revoke",
        summary: "Sign a revocation of every certificate issued below a height",
        help: cert::REVOKE_HELP,
        run: cert::revoke,
    },
    Command {
        name: "sign",
        summary: "Sign a service entry, or its tombstone, from a myco.json manifest",
        help: sign::SIGN_HELP,
        run: sign::sign,
    },
];

fn help() -> String {
    let mut text = String::from(
        "myco: the operator's tool for a Myco fleet\n\n\
         Usage: myco COMMAND [OPTIONS]\n       myco [OPTIONS]\n\nCommands:\n",
    );
    for c in &COMMANDS {
        text += &format!("  {:8}  {}\n", c.name, c.summary);
    }
    text += "\nOptions:\n  -h, --help     Print this help, or a command's with \
             'myco COMMAND --help'\n  -V, --version  Print the version and exit\n";
    text
}

fn main() -> ExitCode {
    match run(Arguments::from_env()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myco: {}", e.message());
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(mut args: Arguments) -> Result<(), Error> {
    let name = args
        .subcommand()
        .map_err(|_| Error::Usage("the command is not valid UTF-8; see 'myco --help'".into()))?;
    let wants_help = args.contains(["-h", "--help"]);
    let Some(name) = name else {
        return run_bare(args, wants_help);
    };
    let Some(command) = COMMANDS.iter().find(|c| c.name == name) else {
        return Err(Error::Usage(format!(
            "unknown command '{name}'; see 'myco --help'"
        )));
    };
    if wants_help {
        return output::print_text(command.help);
    }
    (command.run)(args)
}

/// `myco` without a command: only `--help` and `--version` mean something.
fn run_bare(mut args: Arguments, wants_help: bool) -> Result<(), Error> {
    if wants_help {
        return output::print_text(&help());
    }
    if args.contains(["-V", "--version"]) {
        return output::print_text(&format!("myco {}\n", env!("CARGO_PKG_VERSION")));
    }
    match args.finish().first() {
        None => {
            eprint!("{}", help());
            Err(Error::Usage(
                "no command given; pick one from the list above".into(),
            ))
        }
        Some(arg) => Err(Error::Usage(format!(
            "unknown option '{}'; see 'myco --help'",
            arg.to_string_lossy()
        ))),
    }
}
