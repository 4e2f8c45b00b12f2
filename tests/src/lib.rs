//! End-to-end tests of the real binaries live in `tests/`: processes on loopback, driven as an
//! operator would drive them. The harness they use (finding the binaries, the `Cluster` of
//! daemons, the HTTP client) is `myco-testkit`'s, shared with every other test and benchmark; this
//! library holds nothing of its own. Network namespaces, real systemd in containers and real nix
//! run from `testbed/` through the Makefile.
