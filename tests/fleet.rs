//! Fleet mode end to end: a real 3-member etcd cluster (tests/common/etcd.rs), real
//! switchyard processes, real demo backends.

mod common;

use std::time::Duration;

use common::etcd::EtcdCluster;

#[tokio::test]
async fn etcd_fixture_survives_a_leader_kill_and_a_pause() {
    let mut etcd = EtcdCluster::start(3).await;
    let leader = etcd.leader().await;
    etcd.kill(leader);
    let next = etcd.leader().await;
    assert_ne!(next, leader);
    etcd.restart(leader);
    etcd.wait_healthy(Duration::from_secs(20)).await;
    let other = (next + 1) % 3;
    etcd.pause(other);
    assert!(!etcd.healthy(other).await);
    etcd.resume(other);
    etcd.wait_healthy(Duration::from_secs(20)).await;
    assert!(etcd.compact().await > 0);
}
