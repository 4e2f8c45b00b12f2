//! `myco credential`: the operator key signs an access credential, the authority `myco proxy`
//! shows a box to open a tunnel to its API, for a holder's key, until an expiry, for one box or
//! all. The holder keeps the key; the credential alone opens nothing.

use crate::args::{self, Error, Flags};
use crate::files::{self, PUBLIC_MODE};
use crate::output::{self, Value};
use myco_core::crypto::access::{issue_access, Access, AccessBody};
use myco_core::crypto::SigningKey;
use pico_args::Arguments;
use std::path::PathBuf;

pub const CREDENTIAL_HELP: &str = "\
Usage: myco credential --operator-key FILE --holder-pubkey HEX --expires-in DURATION
                       [--node ID] [--issued-at N] --out FILE [--json]

Signs an access credential that lets the holder of a key open a tunnel to a box's API with
'myco proxy --credential FILE --key HOLDER.key', and writes it to FILE (raw bytes, mode 0644).
Make the holder's key with 'myco keygen' and get its public key with 'myco pubkey'. A box refuses
the credential once it has expired by the box's clock, or once the RevocationBlock rises above
--issued-at ('myco revoke').

Options:
  --operator-key FILE   The cluster's operator key (mode 0600)
  --holder-pubkey HEX   The holder's public key: 64 hex digits
  --expires-in DURATION How long it is valid: seconds, or a number and s, m, h or d (e.g. 8h)
  --node ID             Only this box (its node id, 16 hex digits); default: every box
  --issued-at N         The cluster's RevocationBlock height now (default 0)
  --out FILE            Where to write the credential (must not exist)
  --json                Print the summary as one JSON line
  -h, --help            Print this help

Exit status: 0 written; 1 failed (key refused, file exists, I/O; nothing written);
2 bad command line.
";

/// A duration as `--expires-in` takes it: seconds, or a number with s, m, h or d. At most ten
/// years: a credential meant for good is a mistake the operator cannot take back but by a
/// revocation of everything.
pub fn parse_duration_s(value: &str) -> Result<u64, Error> {
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], c),
        _ => (value, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 && scale > 0 && n.saturating_mul(scale) <= 10 * 365 * 86_400 => {
            Ok(n * scale)
        }
        _ => Err(Error::Usage(format!(
            "--expires-in must be a duration from 1s to 3650d, such as 600, 30m, 8h or 7d, got \
             '{value}'"
        ))),
    }
}

/// A node id: 16 hex digits, as `myco nodes` prints it.
pub fn parse_node_id(value: &str) -> Result<u64, Error> {
    match u64::from_str_radix(value, 16) {
        Ok(id) if value.len() == 16 => Ok(id),
        _ => Err(Error::Usage(format!(
            "--node must be a node id of 16 hex digits, as 'myco nodes' prints it, got '{value}'"
        ))),
    }
}

/// Seconds since the Unix epoch by this machine's clock.
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs a credential for `holder_pk` from now for `valid_s` seconds.
pub fn issue(
    operator: &SigningKey,
    holder_pk: [u8; 32],
    valid_s: u64,
    node: Option<u64>,
    issued_at: u64,
) -> Vec<u8> {
    let body = AccessBody {
        operator_pk: operator.public_key().0,
        holder_pk,
        expires_at_s: unix_now_s().saturating_add(valid_s),
        issued_at,
        node,
    };
    let bytes = issue_access(operator, &body);
    assert_eq!(Access::decode(&bytes).map(|a| a.body), Ok(body));
    bytes.to_vec()
}

struct CredentialFlags {
    operator_key: PathBuf,
    holder_pk: [u8; 32],
    valid_s: u64,
    node: Option<u64>,
    issued_at: u64,
    out: PathBuf,
    json: bool,
}

impl CredentialFlags {
    fn parse(args: Arguments) -> Result<CredentialFlags, Error> {
        let mut flags = Flags::new(args, "credential");
        let operator_key = flags.path("--operator-key")?;
        let holder = flags.string("--holder-pubkey")?;
        let expires_in = flags.string("--expires-in")?;
        let node = flags.string("--node")?;
        let issued_at = flags.string("--issued-at")?;
        let out = flags.path("--out")?;
        let json = flags.switch("--json");
        flags.finish()?;
        let holder = flags.required(holder, "--holder-pubkey")?;
        Ok(CredentialFlags {
            operator_key: flags.required(operator_key, "--operator-key")?,
            holder_pk: args::parse_hex32(holder.as_bytes()).map_err(|e| {
                Error::Usage(format!(
                    "--holder-pubkey is not a public key: {e}; \
                     get it with 'myco pubkey --key holder.key'"
                ))
            })?,
            valid_s: parse_duration_s(&flags.required(expires_in, "--expires-in")?)?,
            node: node.as_deref().map(parse_node_id).transpose()?,
            issued_at: match issued_at {
                Some(n) => args::parse_height(&n, "--issued-at", 0)?,
                None => 0,
            },
            out: flags.required(out, "--out")?,
            json,
        })
    }
}

pub fn credential(args: Arguments) -> Result<(), Error> {
    let f = CredentialFlags::parse(args)?;
    let operator = files::read_key(&f.operator_key, "--operator-key")?;
    if f.holder_pk == operator.public_key().0 {
        return Err(Error::Usage(
            "--holder-pubkey is the operator key's own; the operator needs no credential \
             ('myco proxy --operator-key'): pass the holder's key from 'myco pubkey'"
                .into(),
        ));
    }
    let bytes = issue(&operator, f.holder_pk, f.valid_s, f.node, f.issued_at);
    files::write_new(&f.out, &bytes, PUBLIC_MODE)?;
    let body = Access::decode(&bytes).expect("issued above").body;
    let scope = body
        .node
        .map_or("every box".into(), |n| format!("{n:016x}"));
    let fields = [
        ("holder", Value::Text(args::hex(&body.holder_pk))),
        ("expires_at_s", Value::Number(body.expires_at_s)),
        ("node", Value::Text(scope)),
        ("issued_at", Value::Number(body.issued_at)),
        ("size_bytes", Value::Number(bytes.len() as u64)),
        ("path", Value::Text(f.out.display().to_string())),
    ];
    output::print(&fields, f.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations in each unit, and the ones refused: zero, no number, an unknown unit, past ten
    /// years.
    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("600").unwrap(), 600);
        assert_eq!(parse_duration_s("30m").unwrap(), 1800);
        assert_eq!(parse_duration_s("8h").unwrap(), 28_800);
        assert_eq!(parse_duration_s("7d").unwrap(), 604_800);
        for bad in ["0", "h", "", "5w", "3651d", "-5", "1.5h"] {
            assert!(parse_duration_s(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_ids() {
        assert_eq!(parse_node_id("00000000000000ff").unwrap(), 255);
        for bad in ["ff", "00000000000000fg", "000000000000000000"] {
            assert!(parse_node_id(bad).is_err(), "{bad}");
        }
    }
}
