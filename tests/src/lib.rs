//! End-to-end tests of the real binaries live here: processes on loopback, network namespaces,
//! real systemd in containers and real nix. They drive `myco-d` and `myco` as an operator would.
