//! Fuzzes the systemd unit compiler (`myco_core::unit::render`) on arbitrary specs.
//!
//! Two kinds of spec come from each input: the spec of `Entry::decode(data)`, when the bytes are an
//! entry the cluster could store, and a spec cut straight from the bytes with no validation at all,
//! so every token can hold any character (newlines, NUL, quotes, `$`, `%`, backslashes,
//! noncharacters). Proves that rendering never panics, that every unit it writes reads back
//! through `check` as exactly the expected directives with each word unquoting to its token (no
//! token can inject a directive or change a command), and that every refusal names a token that
//! really holds something no unit can carry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::config::{
    ARGS_MAX, ENV_MAX, FLAKE_REV_BYTES, NAR_HASH_BYTES, PORTS_MAX, PRE_ARGS_MAX, PRE_MAX,
};
use myco_core::schema::entry::{
    valid_name, Arch, Entry, Limits, Port, Protocol, Requirements, ServiceSpec, Source, Version,
};
use myco_core::unit::check::check;
use myco_core::unit::{render, valid_exec_path, Field, UnitContext, UnitError, UNIT_BYTES_MAX};

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::decode(data) {
        if let Some(spec) = &entry.body.spec {
            let ctx = UnitContext {
                version: entry.body.version,
                program: None,
            };
            exercise(entry.body.name, spec, &ctx);
        }
    }
    let tokens = Tokens::cut(data);
    let (name, spec, ctx) = tokens.spec();
    exercise(name, &spec, &ctx);
});

/// Renders, then checks the unit or the refusal.
fn exercise(name: &str, spec: &ServiceSpec<'_>, ctx: &UnitContext<'_>) {
    let mut out = [0u8; UNIT_BYTES_MAX];
    match render(name, spec, ctx, &mut out) {
        Ok(n) => check_unit(&out[..n], name, spec, ctx),
        Err(UnitError::Name) => assert!(!valid_name(name)),
        Err(UnitError::Path(field)) => assert!(!valid_exec_path(token(spec, ctx, field))),
        Err(UnitError::Token(field)) => {
            assert!(token(spec, ctx, field).chars().any(uncarriable), "{field}")
        }
        Err(UnitError::EnvName(i)) => {
            let key = spec.env[i].0;
            let mut bytes = key.bytes();
            let first_ok = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            assert!(!first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        }
        Err(UnitError::EmptyCommand(i)) => assert!(spec.pre[i].is_empty()),
        Err(UnitError::Limits) => assert!(!spec.limits.valid()),
        // Tokens cut from a long input can outgrow the buffer a valid entry needs: then the same
        // spec must render, and check, in a buffer with room for every token quoted.
        Err(UnitError::TooLong) => {
            let tokens: usize = spec.args.iter().map(|a| a.len()).sum::<usize>()
                + spec
                    .env
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
                + spec.pre.iter().flatten().map(|w| w.len()).sum::<usize>()
                + ctx.program.map_or(0, str::len)
                + match spec.source {
                    Source::Exec { path } => path.len(),
                    Source::Flake { uri, attr, .. } => uri.len() + attr.len(),
                };
            assert!(
                2 * tokens > UNIT_BYTES_MAX - 4096,
                "TooLong for {tokens} token bytes"
            );
            let mut big = vec![0u8; UNIT_BYTES_MAX + 4 * tokens];
            let n = render(name, spec, ctx, &mut big).expect("renders with room");
            check_unit(&big[..n], name, spec, ctx);
        }
    }
}

fn check_unit(unit: &[u8], name: &str, spec: &ServiceSpec<'_>, ctx: &UnitContext<'_>) {
    if let Err(e) = check(unit, name, spec, ctx) {
        panic!("{e}\n{}", String::from_utf8_lossy(unit));
    }
}

/// A control character or a noncharacter: written out here rather than taken from the core, so
/// that the target checks the core's rule instead of repeating it.
fn uncarriable(c: char) -> bool {
    let u = u32::from(c);
    u < 0x20 || (0x7f..0xa0).contains(&u) || (0xfdd0..=0xfdef).contains(&u) || u & 0xfffe == 0xfffe
}

fn token<'a>(spec: &ServiceSpec<'a>, ctx: &UnitContext<'a>, field: Field) -> &'a str {
    match (field, spec.source) {
        (Field::Exec, Source::Exec { path }) => path,
        (Field::Flake, Source::Flake { uri, .. }) => uri,
        (Field::Attr, Source::Flake { attr, .. }) => attr,
        (Field::Program, _) => ctx.program.expect("a program was given"),
        (Field::Arg(i), _) => spec.args[i],
        (Field::EnvName(i), _) => spec.env[i].0,
        (Field::EnvValue(i), _) => spec.env[i].1,
        (Field::Pre { command, word }, _) => spec.pre[command][word],
        (field, source) => panic!("{field} does not exist for {source:?}"),
    }
}

/// The input cut into tokens at 0xFF bytes (never part of UTF-8), each made a string lossily, so
/// tokens hold any character. The first bytes choose the shape.
struct Tokens {
    shape: [u8; 8],
    tokens: Vec<String>,
}

impl Tokens {
    fn cut(data: &[u8]) -> Tokens {
        let shape: [u8; 8] = core::array::from_fn(|i| data.get(i).copied().unwrap_or(0));
        let rest = data.get(8..).unwrap_or(&[]);
        let tokens = rest
            .split(|&b| b == 0xff)
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        Tokens { shape, tokens }
    }

    fn spec(&self) -> (&str, ServiceSpec<'_>, UnitContext<'_>) {
        let mut next = self
            .tokens
            .iter()
            .map(String::as_str)
            .chain(core::iter::repeat(""));
        let mut take = || next.next().expect("endless");
        let [flags, args, env, pre, pre_words, ports, clock, key] = self.shape;
        let name = take();
        let source = if flags & 1 == 1 {
            // The compiler reads only the reference and the attr; the lock is the entry's.
            Source::Flake {
                uri: take(),
                attr: take(),
                rev: [0; FLAKE_REV_BYTES],
                nar_hash: [0; NAR_HASH_BYTES],
            }
        } else {
            Source::Exec { path: take() }
        };
        let program = (flags & 2 == 2).then(&mut take);
        let args = (0..usize::from(args) % (ARGS_MAX + 1))
            .map(|_| take())
            .collect();
        let env = (0..usize::from(env) % (ENV_MAX + 1))
            .map(|_| (take(), take()))
            .collect();
        let pre = (0..usize::from(pre) % (PRE_MAX + 1))
            .map(|c| {
                let words = usize::from(pre_words.rotate_left(c as u32)) % (PRE_ARGS_MAX + 1);
                (0..words).map(|_| take()).collect()
            })
            .collect();
        let ports = (0..usize::from(ports) % (PORTS_MAX + 1))
            .map(|i| Port {
                number: u16::from(ports)
                    .wrapping_mul(257)
                    .wrapping_add(i as u16 * 1000),
                protocol: if i % 2 == 0 {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                },
            })
            .collect();
        let spec = ServiceSpec {
            source,
            args,
            env,
            pre,
            requires: Requirements {
                arch: Arch::Any,
                gpu: flags & 4 == 4,
                zone: None,
            },
            replicas: 1,
            ports,
            // In and out of bounds: an out-of-bounds limit must be refused, never rendered.
            limits: Limits {
                memory_max: (flags & 8 == 8).then_some(u64::from(clock) << 16),
                cpu_weight: (flags & 16 == 16).then_some(u16::from(key) * 40),
                cpu_quota: (flags & 32 == 32).then_some(u16::from(clock) * 40),
                tasks_max: (flags & 64 == 64).then_some(u16::from(key)),
                io_weight: None,
            },
            health: None,
        };
        let ctx = UnitContext {
            version: Version {
                clock: u64::from(clock) << 40 | u64::from(key),
                key_id: u32::from(key),
            },
            program,
        };
        (name, spec, ctx)
    }
}
