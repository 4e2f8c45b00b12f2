//! `parse_metadata` against output captured from Nix 2.8 on a test machine (`tests/nix/metadata/`:
//! a git repository locked by branch, the same repository with uncommitted changes and no
//! branch, and a plain path), and against what Nix never prints.

use super::*;

const GIT: &str = include_str!("../../../tests/nix/metadata/git.json");
const GIT_DIRTY: &str = include_str!("../../../tests/nix/metadata/git-dirty.json");
const PATH: &str = include_str!("../../../tests/nix/metadata/path.json");

const REV: &str = "152b279ae9728ebd2a539847576be4e2e8a2f101";

/// A git reference locks to the top-level url, which names the commit, with the commit and the
/// NAR hash decoded from `locked`.
#[test]
fn git_locks_to_its_commit() {
    let lock = parse_metadata(GIT.as_bytes()).unwrap();
    assert_eq!(
        lock.url,
        format!("git+file:///tmp/nixlock/repo?ref=master&rev={REV}")
    );
    assert_eq!(lock.rev_hex(), REV);
    assert_eq!(lock.short_rev(), "152b279");
    // sha256-ibEOk+iUgliFvEA5qD8hdzXJzx5VF6+y5nGk505Lkcw= in hex (`nix hash to-base16`).
    assert_eq!(
        hex(&lock.nar_hash),
        "89b10e93e894825885bc4039a83f217735c9cf1e5517afb2e671a4e74e4b91cc"
    );
}

/// A dirty tree without a branch and a path have no rev: neither is a lock, and the error names
/// the locked type.
#[test]
fn dirty_tree_and_path_are_unlocked() {
    assert_eq!(
        parse_metadata(GIT_DIRTY.as_bytes()),
        Err(MetadataError::Unlocked { kind: "git".into() })
    );
    assert_eq!(
        parse_metadata(PATH.as_bytes()),
        Err(MetadataError::Unlocked {
            kind: "path".into()
        })
    );
}

/// What Nix never prints is refused with the field at fault: not JSON, a missing field, a rev
/// of the wrong length or case, a hash of another algorithm or length or with non-zero padding
/// bits, and a url that names another rev.
#[test]
fn refuses_what_nix_never_prints() {
    let garbage = [&b""[..], b"not json", b"{}", b"[1]", b"{\"url\": 1}"];
    for bytes in garbage {
        let e = parse_metadata(bytes).unwrap_err();
        assert!(matches!(e, MetadataError::Garbage(_)), "{e:?}");
    }
    let bad_revs = [
        REV[..39].to_string(),
        REV.to_uppercase(),
        format!("{}g", &REV[..39]),
    ];
    for rev in bad_revs {
        let text = GIT.replace(&format!("\"rev\":\"{REV}\""), &format!("\"rev\":\"{rev}\""));
        assert_eq!(
            parse_metadata(text.as_bytes()),
            Err(MetadataError::Rev(rev))
        );
    }
    let hash = "sha256-ibEOk+iUgliFvEA5qD8hdzXJzx5VF6+y5nGk505Lkcw=";
    let bad_hashes = [
        "sha512-ibEOk+iUgliFvEA5qD8hdzXJzx5VF6+y5nGk505Lkcw=",
        "sha256-ibEOk+iUgliFvEA5qD8hdzXJzx5VF6+y5nGk505Lkcw",
        "sha256-ibEOk+iUgliFvEA5qD8hdzXJzx5VF6+y5nGk505Lkcx=",
        "sha256-ibEOk+iUgliFvEA5qD8hdzXJzx5VF6+y5nGk505Lk*w=",
    ];
    for bad in bad_hashes {
        let text = GIT.replace(hash, bad);
        assert_eq!(
            parse_metadata(text.as_bytes()),
            Err(MetadataError::NarHash(bad.into()))
        );
    }
    let other = format!("rev={}", "0".repeat(40));
    let text = GIT.replace(&format!("rev={REV}"), &other);
    assert!(matches!(
        parse_metadata(text.as_bytes()),
        Err(MetadataError::Url(_))
    ));
}
