//! A box and a client with a genuine credential, the client's Open sent: the starting point of
//! the `tunnel_handshake` and `tunnel_record` targets, so both fuzz the same real exchange.

use myco_core::crypto::access::{issue_access, AccessBody};
use myco_core::crypto::cert::certify;
use myco_core::crypto::handshake::{Credentials, Trust};
use myco_core::crypto::tunnel::{TunnelClient, TunnelError, TunnelMsg, TunnelResponder};
use myco_core::crypto::SigningKey;
use myco_core::schema::entry::Arch;

/// The clock both sides read; the credential expires a minute after it.
pub const NOW: u64 = 1_800_000_000;

/// Both sides of a tunnel, the client's Open not yet answered.
pub struct Parties {
    /// The box's credentials.
    pub me: Credentials,
    /// What the box trusts.
    pub trust: Trust,
    /// The key the access credential was issued to.
    pub holder: SigningKey,
    pub client: TunnelClient,
    /// The client's Open, for the box.
    pub open: TunnelMsg,
}

/// The same parties on every call: fixed seeds, so a crash reproduces.
pub fn parties() -> Parties {
    let operator = SigningKey::from_seed([7; 32]).unwrap();
    let key = SigningKey::from_seed([1; 32]).unwrap();
    let cert = certify(&operator, &key.public_key(), 0, Arch::X86_64, false, 0);
    let me = Credentials::new(key, &cert, &operator.public_key()).unwrap();
    let trust = Trust {
        operator: operator.public_key(),
        revocation_block: 0,
        zone: 0,
    };
    let holder = SigningKey::from_seed([2; 32]).unwrap();
    let body = AccessBody {
        operator_pk: operator.public_key().0,
        holder_pk: holder.public_key().0,
        expires_at_s: NOW + 60,
        issued_at: 0,
        node: None,
    };
    let access = issue_access(&operator, &body);
    let (client, open) = TunnelClient::new(&access, &holder, None, [3; 32], [4; 32]).unwrap();
    Parties {
        me,
        trust,
        holder,
        client,
        open,
    }
}

impl Parties {
    /// The box's answer to `open` (the genuine Open or the fuzzer's bytes), with fixed randomness.
    pub fn answer(&self, open: &[u8]) -> Result<(TunnelResponder, TunnelMsg), TunnelError> {
        TunnelResponder::handle_open(open, &self.me, &self.trust, NOW, [5; 32], [6; 32])
    }
}
