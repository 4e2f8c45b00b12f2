//! Fuzzes the daemon's parser of the privileged helper's replies
//! (`myco_core::privileged::decode_reply`) on arbitrary bytes, as a broken or replaced helper
//! could send them.
//!
//! Proves that no input panics it, that whatever it accepts is the one encoding of a reply (the
//! helper's encoder gives the input back for every reason it can send), and that every accepted
//! outcome has an exit code the shell could report: 0 to 255 for a command that exited, 128 plus
//! a signal of 1 to 64 for one killed, none for a request that ran nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::privileged::{
    decode_reply, encode_reply, Outcome, FRAME_HEADER_BYTES, REASON_BYTES_MAX, REPLY_BYTES_MAX,
};

fuzz_target!(|data: &[u8]| {
    let Some(reply) = decode_reply(data) else {
        return;
    };
    match (reply.outcome, reply.outcome.exit_code()) {
        (Outcome::Exited(_), Some(code)) => assert!((0..=255).contains(&code)),
        (Outcome::Signaled(_), Some(code)) => assert!((129..=192).contains(&code)),
        (Outcome::Refused | Outcome::Failed, None) => {}
        (outcome, code) => panic!("{outcome:?} gave the exit code {code:?}"),
    }
    if reply.reason.len() <= REASON_BYTES_MAX {
        let mut again = [0u8; FRAME_HEADER_BYTES + REPLY_BYTES_MAX];
        let len = encode_reply(reply.outcome, reply.reason, &mut again).expect("a reply fits");
        assert_eq!(
            &again[FRAME_HEADER_BYTES..len],
            data,
            "one encoding per reply"
        );
    }
});
