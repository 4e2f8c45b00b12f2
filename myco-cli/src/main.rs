//! `myco`, the operator's tool for a Myco fleet: it makes keys, signs node certificates and
//! revocations, signs service entries from myco.json manifests, renders the systemd unit a
//! manifest becomes, and deploys, removes and inspects services through the local daemon's Unix
//! socket (docs/cli.md).
//!
//! Exit codes scripts can trust:
//! - 0 done;
//! - 1 the work failed: local I/O, a file in the way, a bad key or manifest, or the daemon failed
//!   (5xx, such as 507 disk full or 503 not ready) or answered something that is not an answer;
//! - 2 the command line is wrong;
//! - 3 the daemon cannot be reached: socket missing, connection refused, permission denied, or no
//!   answer in time;
//! - 4 the daemon refused the request (4xx); the message quotes its reason.
//!
//! Errors go to stderr as `myco: what happened; what to do`.

mod answers;
mod args;
mod audit;
mod cert;
mod client;
mod completions;
mod credential;
mod deploy;
mod events;
mod files;
mod init;
mod keys;
mod logs;
mod output;
mod progress;
mod proxy;
mod render;
mod sign;
mod status;

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
const COMMANDS: [Command; 18] = [
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
        name: "credential",
        summary: "Sign an access credential that lets a key open tunnels to boxes' APIs",
        help: credential::CREDENTIAL_HELP,
        run: credential::credential,
    },
    Command {
        name: "init",
        summary: "Write a skeleton service (python, go or node), its flake.nix and myco.json",
        help: init::INIT_HELP,
        run: init::init,
    },
    Command {
        name: "sign",
        summary: "Sign a service entry, or its tombstone, from a myco.json manifest",
        help: sign::SIGN_HELP,
        run: sign::sign,
    },
    Command {
        name: "render",
        summary: "Print the systemd unit a node would run for a myco.json manifest",
        help: render::RENDER_HELP,
        run: render::render,
    },
    Command {
        name: "deploy",
        summary:
            "Sign a service entry from myco.json (or take one from sign) and send it to myco-d",
        help: deploy::DEPLOY_HELP,
        run: deploy::deploy,
    },
    Command {
        name: "rm",
        summary: "Sign a tombstone that removes a service and send it to myco-d",
        help: deploy::RM_HELP,
        run: deploy::rm,
    },
    Command {
        name: "ls",
        summary: "List the services in the desired state",
        help: status::LS_HELP,
        run: status::ls,
    },
    Command {
        name: "nodes",
        summary: "List the cluster's members as the local myco-d sees them",
        help: status::NODES_HELP,
        run: status::nodes,
    },
    Command {
        name: "status",
        summary: "Print the local myco-d's health",
        help: status::STATUS_HELP,
        run: status::status,
    },
    Command {
        name: "events",
        summary: "Follow the local myco-d's events: deploys, units, members, refused frames",
        help: events::EVENTS_HELP,
        run: events::events,
    },
    Command {
        name: "logs",
        summary: "Print (or follow) a service's journal from the box that runs it",
        help: logs::LOGS_HELP,
        run: logs::logs,
    },
    Command {
        name: "audit",
        summary: "Print (or follow) this box's audit log of deployment outcomes",
        help: audit::AUDIT_HELP,
        run: audit::audit,
    },
    Command {
        name: "proxy",
        summary: "Serve a remote box's API here, through an authenticated, encrypted tunnel",
        help: proxy::PROXY_HELP,
        run: proxy::proxy,
    },
    Command {
        name: "completions",
        summary: "Print a bash or zsh completion script for myco",
        help: completions::COMPLETIONS_HELP,
        run: completions::completions,
    },
];

fn help() -> String {
    let mut text = String::from(
        "myco: the operator's tool for a Myco fleet\n\n\
         Usage: myco COMMAND [OPTIONS]\n       myco [OPTIONS]\n\nCommands:\n",
    );
    let width = COMMANDS.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &COMMANDS {
        text += &format!("  {:width$}  {}\n", c.name, c.summary);
    }
    text += "\nOptions:\n  -h, --help     Print this help, or a command's with \
             'myco COMMAND --help'\n  -V, --version  Print the version and exit\n\n\
             Commands that talk to myco-d use --socket PATH, else $MYCO_SOCKET, else \
             /run/myco/myco.sock.\n\n\
             Exit status: 0 done; 1 failed (I/O, a key or manifest refused, myco-d failed with \
             5xx);\n2 bad command line; 3 cannot reach myco-d; 4 myco-d refused the request \
             (4xx). See docs/cli.md.\n";
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
