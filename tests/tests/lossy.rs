//! Real packet loss on real sockets: 20 `myco-d` processes on loopback with an nftables rule
//! dropping 30% of the UDP datagrams between them (`myco_testkit::loss`) converge on 100 deploys
//! and place a SIGKILLed box's services elsewhere. Root-only (nftables), so it is in the Makefile's
//! `ROOT_TESTS` and runs in `make test-root`; `make bench-loss` measures the same at 30% and 50%.

use myco_testkit::lossy::{run, Scenario};

#[test]
fn twenty_daemons_at_30_percent_loss_converge_and_replace_a_killed_box() {
    let s = Scenario {
        nodes: 20,
        services: 100,
        loss_percent: 30,
    };
    let m = run("lossy30", &s);
    eprintln!("{m:?}");
    assert!(m.moved > 0, "the killed box held services: {m:?}");
    // At 30% on 20 boxes the run drops well over a thousand datagrams (about 1,800 measured): a
    // rule that dropped nothing would mean the test ran without loss.
    assert!(m.dropped > 100, "the loss rule dropped datagrams: {m:?}");
    assert_eq!(m.false_dead, 0, "no live member was declared dead: {m:?}");
}
