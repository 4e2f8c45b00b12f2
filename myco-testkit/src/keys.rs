//! Keys from fixed seeds: the same test gets the same keys on every run and on every machine, so a
//! failure replays exactly. Seeds never depend on the process id or the clock.

use crate::hex;
use myco_core::crypto::SigningKey;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The seed `label` names: a fixed function of the text, spread over all 32 bytes (SplitMix64
/// over FNV-1a), never all zero.
pub fn seed(label: &str) -> [u8; 32] {
    let mut state = label.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    assert_ne!(
        seed, [0; 32],
        "SplitMix64 never gives four zero words in a row"
    );
    seed
}

/// The key `label` names.
pub fn key(label: &str) -> SigningKey {
    SigningKey::from_seed(seed(label)).expect("a non-zero seed makes a key")
}

/// The operator key of tests that need just one.
pub fn operator() -> SigningKey {
    key("operator")
}

/// Writes `seed` as a key file (64 hex digits and a newline, mode 0600), as `myco keygen` would.
pub fn write_key_file(path: &Path, seed: &[u8; 32]) {
    fs::write(path, format!("{}\n", hex(seed)))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod a key file");
}
