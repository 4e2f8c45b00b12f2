//! Real `myco-d` processes in two zones on loopback: membership stays in each zone, and a deploy
//! submitted in zone 0 for zone 1 crosses through the zones' bridges and is placed in zone 1.

use myco_testkit::{wait_until, Cluster, Daemon, NodeOptions};
use std::time::Duration;

/// Handshakes, a bridge exchange and a rumor on a busy two-core CI box.
const CONVERGE: Duration = Duration::from_secs(30);

/// The ids `/services` on `d` places service `name` on.
fn placed_on(d: &Daemon, name: &str) -> Vec<String> {
    let json = d.get_json("/services");
    let rows = json["services"].as_array().cloned().unwrap_or_default();
    let row = rows.iter().find(|s| s["name"] == name);
    let placed = row.and_then(|r| r["placed_on"].as_array().cloned());
    let ids = placed.unwrap_or_default().into_iter();
    ids.filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect()
}

fn node(zone: u8, bridge: bool, join: Vec<usize>, bridge_seeds: Vec<usize>) -> NodeOptions {
    NodeOptions {
        zone,
        bridge,
        join: Some(join),
        bridge_seeds,
        ..NodeOptions::default()
    }
}

/// Zone 0: bridge n0 and n1; zone 1: bridge n2 (seeded with n0) and n3. A deploy for zone 1
/// submitted at n1 reaches n3, which places it on a box of zone 1, while zone 0 places it nowhere;
/// neither zone lists the other's boxes, and n2 counts the entry as received over its bridge.
#[test]
fn a_deploy_in_zone_0_for_zone_1_is_placed_in_zone_1() {
    let mut c = Cluster::new("zones");
    c.add(node(0, true, vec![], vec![]));
    c.add(node(0, false, vec![0], vec![]));
    c.add(node(1, true, vec![], vec![0]));
    c.add(node(1, false, vec![2], vec![]));
    c.start_all();
    let manifest = c.write(
        "edge.json",
        r#"{"name": "edge", "exec": "/usr/bin/true", "zone": 1}"#,
    );
    c.deploy(1, &manifest);
    let zone1 = [
        c.daemons[2].key.node_id.clone(),
        c.daemons[3].key.node_id.clone(),
    ];
    wait_until(CONVERGE, "zone 1 places the deploy made in zone 0", || {
        let placed = placed_on(&c.daemons[3], "edge");
        !placed.is_empty() && placed.iter().all(|id| zone1.contains(id))
    });
    assert!(
        placed_on(&c.daemons[1], "edge").is_empty(),
        "zone 0 has no box of zone 1 to place it on"
    );
    for (d, others) in [(1, [2, 3]), (3, [0, 1])] {
        let listed: Vec<String> = c.daemons[d].nodes().into_iter().map(|(id, _)| id).collect();
        for o in others {
            let id = &c.daemons[o].key.node_id;
            assert!(!listed.contains(id), "n{d} lists n{o} of the other zone");
        }
    }
    assert!(c.daemons[2].metric("myco_bridge_entries_total") >= 1.0);
    assert_eq!(
        c.daemons[0].metric("myco_frames_refused_total{reason=\"bridge\"}"),
        0.0
    );
}
