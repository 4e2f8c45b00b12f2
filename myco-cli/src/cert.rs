//! `myco cert` and `myco revoke`: what the operator key signs for the cluster's membership. A
//! certificate admits one node key in a zone and arch; a revocation refuses every certificate
//! issued below a RevocationBlock height.

use crate::args::{self, arch_name, Error, Flags};
use crate::files::{self, PUBLIC_MODE};
use crate::output::{self, Value};
use myco_core::config::{CERT_BYTES_MAX, REVOCATION_BYTES_MAX};
use myco_core::crypto::cert::issue_cert;
use myco_core::crypto::revocation::encode_revocation;
use myco_core::crypto::{BridgeScope, Cert, CertBody, Revocation};
use myco_core::schema::entry::Arch;
use pico_args::Arguments;
use std::path::PathBuf;

pub const CERT_HELP: &str = "\
Usage: myco cert --operator-key FILE --node-pubkey HEX --zone Z --arch ARCH [--gpu]
                 [--bridge all|Z,Z...] [--issued-at N] --out FILE [--json]

Signs a certificate that admits one node key to the cluster, and writes it to FILE (raw bytes,
mode 0644). Get the node's public key with 'myco pubkey --key node.key' on the node.

Options:
  --operator-key FILE  The cluster's operator key (mode 0600)
  --node-pubkey HEX    The node's public key: 64 hex digits
  --zone Z             The node's zone, 0 to 255; nodes talk only within their zone
  --arch ARCH          x86_64, aarch64 or any
  --gpu                The node has a GPU
  --bridge SCOPE       The node may bridge its zone to other zones: 'all', or zones 0 to 63
                       separated by commas. Its zone's bridges carry deploys between zones
                       (start it with myco-d --bridge-seed); membership stays in each zone.
                       Nodes older than bridges refuse such a certificate
  --issued-at N        The cluster's RevocationBlock height now (default 0). A certificate issued
                       below the RevocationBlock is refused, so after a 'myco revoke --height N'
                       new certificates need --issued-at N or more
  --out FILE           Where to write the certificate (must not exist)
  --json               Print the summary as one JSON line
  -h, --help           Print this help

Exit status: 0 written; 1 failed (key refused, file exists, I/O; nothing written);
2 bad command line.
";

pub const REVOKE_HELP: &str = "\
Usage: myco revoke --operator-key FILE --height N --out FILE [--json]

Signs a revocation that raises the cluster's RevocationBlock to N, and writes it to FILE (raw
bytes, mode 0644). Once nodes accept it they refuse every certificate issued below N, so first
re-certify the nodes you still trust with 'myco cert --issued-at N'. The block only rises: a
revocation to a lower height than the cluster's changes nothing.

Options:
  --operator-key FILE  The cluster's operator key (mode 0600)
  --height N           The new RevocationBlock, 1 or more
  --out FILE           Where to write the revocation (must not exist)
  --json               Print the summary as one JSON line
  -h, --help           Print this help

Exit status: 0 written; 1 failed (key refused, file exists, I/O; nothing written);
2 bad command line.
";

/// A `myco cert` command line, checked before any file is touched.
struct CertFlags {
    operator_key: PathBuf,
    node_pk: [u8; 32],
    zone: u8,
    arch: Arch,
    gpu: bool,
    bridge: Option<BridgeScope>,
    issued_at: u64,
    out: PathBuf,
    json: bool,
}

impl CertFlags {
    fn parse(args: Arguments) -> Result<CertFlags, Error> {
        let mut flags = Flags::new(args, "cert");
        let operator_key = flags.path("--operator-key")?;
        let node_pubkey = flags.string("--node-pubkey")?;
        let zone = flags.string("--zone")?;
        let arch = flags.string("--arch")?;
        let gpu = flags.switch("--gpu");
        let bridge = flags.string("--bridge")?;
        let issued_at = flags.string("--issued-at")?;
        let out = flags.path("--out")?;
        let json = flags.switch("--json");
        flags.finish()?;

        let node_pubkey = flags.required(node_pubkey, "--node-pubkey")?;
        Ok(CertFlags {
            operator_key: flags.required(operator_key, "--operator-key")?,
            node_pk: args::parse_hex32(node_pubkey.as_bytes()).map_err(|e| {
                Error::Usage(format!(
                    "--node-pubkey is not a public key: {e}; \
                     get it with 'myco pubkey --key node.key'"
                ))
            })?,
            zone: args::parse_zone(&flags.required(zone, "--zone")?)?,
            arch: args::parse_arch(&flags.required(arch, "--arch")?)?,
            gpu,
            bridge: bridge.as_deref().map(args::parse_bridge).transpose()?,
            issued_at: match issued_at {
                Some(n) => args::parse_height(&n, "--issued-at", 0)?,
                None => 0,
            },
            out: flags.required(out, "--out")?,
            json,
        })
    }
}

pub fn cert(args: Arguments) -> Result<(), Error> {
    let flags = CertFlags::parse(args)?;
    let operator = files::read_key(&flags.operator_key, "--operator-key")?;
    let issuer = operator.public_key();
    // Certifying the operator key as a node is a mixed-up argument, not a useful act.
    if flags.node_pk == issuer.0 {
        return Err(Error::Usage(
            "--node-pubkey is the operator key's own public key; \
             pass the node's key from 'myco pubkey --key node.key'"
                .into(),
        ));
    }
    let body = CertBody {
        issuer: issuer.key_id(),
        node_pk: flags.node_pk,
        zone: flags.zone,
        arch: flags.arch,
        gpu: flags.gpu,
        issued_at: flags.issued_at,
        bridge: flags.bridge,
    };
    let mut bytes = [0u8; CERT_BYTES_MAX];
    let n = issue_cert(&operator, &body, &mut bytes);
    assert_eq!(Cert::decode(&bytes[..n]).map(|c| c.body), Ok(body));
    files::write_new(&flags.out, &bytes[..n], PUBLIC_MODE)?;

    let fields = [
        ("node_id", Value::Text(format!("{:016x}", body.node_id()))),
        ("zone", Value::Number(body.zone.into())),
        ("arch", Value::Text(arch_name(body.arch).into())),
        ("gpu", Value::Bool(body.gpu)),
        ("bridge", Value::Bool(body.bridge.is_some())),
        ("issued_at", Value::Number(body.issued_at)),
        ("issuer_key_id", Value::Number(body.issuer.into())),
        ("size_bytes", Value::Number(n as u64)),
        ("path", Value::Text(flags.out.display().to_string())),
    ];
    output::print(&fields, flags.json)
}

pub fn revoke(args: Arguments) -> Result<(), Error> {
    let mut flags = Flags::new(args, "revoke");
    let operator_key = flags.path("--operator-key")?;
    let height = flags.string("--height")?;
    let out = flags.path("--out")?;
    let json = flags.switch("--json");
    flags.finish()?;
    let operator_key = flags.required(operator_key, "--operator-key")?;
    // Height 0 is the RevocationBlock every cluster starts at: revoking to it revokes nothing.
    let height = args::parse_height(&flags.required(height, "--height")?, "--height", 1)?;
    let out = flags.required(out, "--out")?;

    let operator = files::read_key(&operator_key, "--operator-key")?;
    let mut bytes = [0u8; REVOCATION_BYTES_MAX];
    let n = encode_revocation(&operator, height, &mut bytes);
    let decoded = Revocation::decode(&bytes[..n]).map(|r| r.verify(&operator.public_key()));
    assert_eq!(decoded, Ok(Ok(height)));
    files::write_new(&out, &bytes[..n], PUBLIC_MODE)?;

    let fields = [
        ("height", Value::Number(height)),
        (
            "issuer_key_id",
            Value::Number(operator.public_key().key_id().into()),
        ),
        ("size_bytes", Value::Number(n as u64)),
        ("path", Value::Text(out.display().to_string())),
    ];
    output::print(&fields, json)
}
