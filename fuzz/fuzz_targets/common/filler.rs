//! Argument lists of filler bytes for fuzz-built service specs, shared by the `node` and `store`
//! targets so entries reach every size up to one frame.

use myco_core::config::ARGS_MAX;

static FILL: [u8; 200] = [b'x'; 200];

/// `size % 5` arguments: the first `size % 200 + 1` bytes long, the others 200.
pub fn filler_args(size: u8) -> heapless::Vec<&'static str, ARGS_MAX> {
    let fill = core::str::from_utf8(&FILL).expect("ascii");
    let mut args = heapless::Vec::new();
    for i in 0..usize::from(size % 5) {
        let len = if i == 0 {
            usize::from(size) % 200 + 1
        } else {
            200
        };
        args.push(&fill[..len]).expect("at most 4 args");
    }
    args
}
