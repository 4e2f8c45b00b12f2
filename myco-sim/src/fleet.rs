//! Realistic service specs, as an edge fleet's operators write them, drawn from the seed.
//!
//! Every spec has what the Nix engine's entries carry in the field: a flake reference locked to a
//! commit (`?ref=...&rev=<40 hex>`) with its narHash, an attribute path, four arguments, four
//! environment variables and two ports. What repeats follows how fleets are built: most services
//! come from a few repositories that hold many of them (`MONOREPOS` of `REPOS`), each deployed
//! at one of its last `REVS_PER_REPO` commits; attribute paths name one of a few dozen
//! components; arguments and variable names are the house's conventions; some values are shared
//! (log level, the tracing endpoint, the region) and some are the service's own (its database
//! URL, often its port). `myco-sim capacity` prints the share of text bytes that repeat.
//!
//! A service's repository, component and port depend on its index only, so a new version of
//! `svc-7` stays `svc-7` of the same repository; what changes between versions (the commit, the
//! log level, the region) is drawn from the run's PRNG. `distinct` makes every text unique to
//! its service at the same sizes, the worst case for the store's shared strings.

use myco_core::config::{FLAKE_REV_BYTES, NAR_HASH_BYTES};
use myco_core::random::Prng;
use myco_core::schema::entry::{
    Arch, Check, Health, Port, Protocol, Requirements, ServiceSpec, Source,
};

/// Repositories in the fleet; the first `MONOREPOS` hold most services.
pub const REPOS: u64 = 40;
pub const MONOREPOS: u64 = 6;
/// Out of 100 services, how many live in a monorepo.
pub const MONOREPO_PERCENT: u64 = 75;
/// Commits of one repository in use at once.
pub const REVS_PER_REPO: u64 = 3;

const COMPONENTS: [&str; 24] = [
    "api",
    "web-frontend",
    "worker",
    "ingest",
    "scheduler",
    "gateway",
    "metrics-agent",
    "auth",
    "billing",
    "search",
    "cache-warmer",
    "notifier",
    "exporter",
    "collector",
    "router",
    "uploader",
    "thumbnailer",
    "indexer",
    "mailer",
    "reporter",
    "sync",
    "backup",
    "edge-proxy",
    "telemetry",
];
const TEAMS: [&str; 6] = [
    "platform",
    "payments",
    "logistics",
    "observability",
    "identity",
    "retail-edge",
];
const LOG_LEVELS: [&str; 4] = [
    "info",
    "warn",
    "info,hyper=warn,tower_http=info",
    "debug,h2=info,rustls=info",
];
const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-southeast-2"];
const PORTS: [u16; 5] = [8080, 8080, 8000, 3000, 9000];

/// The texts of one service's spec, owned, so `ServiceSpec` can borrow them.
pub struct Texts {
    uri: String,
    attr: String,
    args: [String; 4],
    env: [(String, String); 4],
    rev: [u8; FLAKE_REV_BYTES],
    nar_hash: [u8; NAR_HASH_BYTES],
    port: u16,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of commit `v` of repository `repo` (and the narHash of its tree), fixed by `seed`.
fn commit(seed: u64, repo: u64, v: u64) -> ([u8; FLAKE_REV_BYTES], [u8; NAR_HASH_BYTES]) {
    let mut r = Prng::new(seed ^ (repo << 8) ^ v ^ 0x5245_5653);
    let mut rev = [0u8; FLAKE_REV_BYTES];
    let mut nar = [0u8; NAR_HASH_BYTES];
    rev.iter_mut()
        .chain(nar.iter_mut())
        .for_each(|b| *b = r.next_u64() as u8);
    (rev, nar)
}

/// Where service `index` of the fleet of `seed` comes from; fixed for all its versions.
struct Home {
    mono: bool,
    repo: u64,
    component: &'static str,
    team: &'static str,
    port: u16,
}

fn home(seed: u64, index: u64) -> Home {
    let mut own = Prng::new(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mono = own.below(100) < MONOREPO_PERCENT;
    let repo = if mono {
        own.below(MONOREPOS)
    } else {
        MONOREPOS + own.below(REPOS - MONOREPOS)
    };
    let component = COMPONENTS[own.below(COMPONENTS.len() as u64) as usize];
    let port = match own.below(PORTS.len() as u64 + 1) as usize {
        i if i < PORTS.len() => PORTS[i],
        _ => 8100 + (index % 400) as u16,
    };
    Home {
        mono,
        repo,
        component,
        team: TEAMS[(repo % TEAMS.len() as u64) as usize],
        port,
    }
}

type Flake = (String, String, [u8; FLAKE_REV_BYTES], [u8; NAR_HASH_BYTES]);

/// The locked reference, attribute, rev and narHash of a version of service `index`.
fn flake(
    seed: u64,
    index: u64,
    h: &Home,
    requires: &Requirements,
    distinct: bool,
    r: &mut Prng,
) -> Flake {
    // A distinct fleet gives every service a repository and a commit of its own.
    let (repo, v) = if distinct {
        (REPOS + index, 0)
    } else {
        (h.repo, r.below(REVS_PER_REPO))
    };
    let (rev, nar_hash) = commit(seed, repo, v);
    let (team, component) = (h.team, h.component);
    let uri = if h.mono {
        format!(
            "git+https://git.example-fleet.internal/{team}/services-{repo}.git?ref=refs/heads/main&rev={}",
            hex(&rev)
        )
    } else {
        format!(
            "git+ssh://git@git.example-fleet.internal/{team}/{component}-{repo}.git?ref=release&rev={}",
            hex(&rev)
        )
    };
    let system = match requires.arch {
        Arch::Aarch64 => "aarch64-linux",
        Arch::X86_64 | Arch::Any => "x86_64-linux",
    };
    let attr = if h.mono {
        format!("packages.{system}.{component}")
    } else {
        format!("packages.{system}.default")
    };
    (uri, attr, rev, nar_hash)
}

/// The texts of service `index` (named `name`) of the fleet of `seed`, for requirements
/// `requires`; `r` draws what changes between versions.
pub fn texts(
    seed: u64,
    index: u64,
    name: &str,
    requires: &Requirements,
    distinct: bool,
    r: &mut Prng,
) -> Texts {
    let h = home(seed, index);
    let (uri, attr, rev, nar_hash) = flake(seed, index, &h, requires, distinct, r);
    let (component, port) = (h.component, h.port);
    let unique = |t: &str| {
        if distinct {
            format!("{t}-{index}")
        } else {
            t.to_string()
        }
    };
    // Variable names allow no '-'.
    let var = |t: &str| {
        if distinct {
            format!("{t}_{index}")
        } else {
            t.to_string()
        }
    };
    let level = LOG_LEVELS[r.below(LOG_LEVELS.len() as u64) as usize];
    let region = REGIONS[r.below(REGIONS.len() as u64) as usize];
    let db = format!(
        "postgres://{name}@db-{region}.example-fleet.internal:5432/{}?sslmode=verify-full",
        name.replace('-', "_")
    );
    Texts {
        uri,
        attr: unique(&attr),
        args: [
            unique("--config"),
            unique(&format!("/etc/{component}/config.toml")),
            unique(&format!("--listen=0.0.0.0:{port}")),
            unique("--log-format=json"),
        ],
        env: [
            (var("RUST_LOG"), unique(level)),
            (var("DATABASE_URL"), db),
            (
                var("OTEL_EXPORTER_OTLP_ENDPOINT"),
                unique("http://otel-collector.observability.example-fleet.internal:4317"),
            ),
            (var("SERVICE_REGION"), unique(region)),
        ],
        rev,
        nar_hash,
        port,
    }
}

impl Texts {
    /// The spec these texts make, with `requires` and `replicas`.
    pub fn spec(&self, requires: Requirements, replicas: u8) -> ServiceSpec<'_> {
        let mut spec = ServiceSpec::minimal(Source::Flake {
            uri: &self.uri,
            attr: &self.attr,
            rev: self.rev,
            nar_hash: self.nar_hash,
        });
        for a in &self.args {
            spec.args.push(a).expect("4 arguments fit");
        }
        for (k, v) in &self.env {
            spec.env.push((k, v)).expect("4 variables fit");
        }
        for number in [self.port, 9100] {
            let protocol = Protocol::Tcp;
            spec.ports
                .push(Port { number, protocol })
                .expect("2 ports fit");
        }
        spec.requires = requires;
        spec.replicas = replicas;
        // Every service answers an HTTP check on its port; short, so a sick one (a unit fault,
        // `executors/checks.rs`) is found, restarted and back within a few simulated seconds.
        spec.health = Some(Health {
            check: Check::Http {
                path: "/healthz",
                port: self.port,
            },
            interval_s: 1,
            timeout_s: 1,
            failures: 2,
        });
        spec
    }
}
