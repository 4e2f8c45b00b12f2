//! `myco keygen` and `myco pubkey`: making a key file and reading its public half. Operator keys
//! and node keys are the same kind of key; what a key is for is decided by who certifies it.

use crate::args::{hex, Error, Flags};
use crate::files::{self, KEY_MODE};
use crate::output::{self, Value};
use myco_core::crypto::SigningKey;
use pico_args::Arguments;

pub const KEYGEN_HELP: &str = "\
Usage: myco keygen --out FILE [--json]

Makes a new Ed25519 key from the OS random source and writes its secret seed to FILE as 64 hex
digits and a newline, mode 0600. Use it for the operator key (myco keygen --out operator.key) and
for each node's key (myco keygen --out node.key). Never replaces an existing file.

Options:
  --out FILE  Where to write the key (must not exist)
  --json      Print {\"public_key\",\"key_id\",\"path\"} as one JSON line
  -h, --help  Print this help

Exit status: 0 written; 1 failed (file exists, I/O; nothing written); 2 bad command line.
";

pub const PUBKEY_HELP: &str = "\
Usage: myco pubkey --key FILE [--json]

Prints the public key of a key file in hex, its key id (how certificates, revocations and entries
name an operator key), its node id (how the cluster names a node with this key) and, for a node
key, the key its binary cache signs with in Nix's NAME:BASE64 form (for trusted-public-keys).

Options:
  --key FILE  The key file, as written by 'myco keygen' (must be mode 0600)
  --json      Print {\"public_key\",\"key_id\",\"node_id\",\"nix_cache_key\"} as one JSON line
  -h, --help  Print this help

Exit status: 0 printed; 1 the key file is refused (missing, readable by others, not a key);
2 bad command line.
";

pub fn keygen(args: Arguments) -> Result<(), Error> {
    let mut flags = Flags::new(args, "keygen");
    let out = flags.path("--out")?;
    let json = flags.switch("--json");
    flags.finish()?;
    let out = flags.required(out, "--out")?;

    let seed = files::random_seed()?;
    let key = SigningKey::from_seed(seed).expect("random_seed refuses the all-zero seed");
    files::write_new(&out, files::key_file_text(&seed).as_bytes(), KEY_MODE)?;
    // Reading the file back proves it is a key file `myco` accepts, mode included.
    let public = key.public_key();
    assert_eq!(files::read_key(&out, "--out")?.public_key(), public);

    let fields = [
        ("public_key", Value::Text(hex(&public.0))),
        ("key_id", Value::Number(public.key_id().into())),
        ("path", Value::Text(out.display().to_string())),
    ];
    output::print(&fields, json)
}

pub fn pubkey(args: Arguments) -> Result<(), Error> {
    let mut flags = Flags::new(args, "pubkey");
    let key = flags.path("--key")?;
    let json = flags.switch("--json");
    flags.finish()?;
    let key = flags.required(key, "--key")?;

    let public = files::read_key(&key, "--key")?.public_key();
    let fields = [
        ("public_key", Value::Text(hex(&public.0))),
        ("key_id", Value::Number(public.key_id().into())),
        ("node_id", Value::Text(format!("{:016x}", public.node_id()))),
        ("nix_cache_key", Value::Text(nix_cache_key(&public))),
    ];
    output::print(&fields, json)
}

/// The node's binary cache key as Nix's `trusted-public-keys` names it: `<node id>:<base64>`.
fn nix_cache_key(public: &myco_core::crypto::PublicKey) -> String {
    let mut b64 = [0u8; 44];
    let b64 = myco_core::cache::base64(&public.0, &mut b64);
    format!("{:016x}:{b64}", public.node_id())
}
