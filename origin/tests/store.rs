//! The store conformance suite against every backend: redb, one Redis
//! server and a Redis Cluster, on real `redis-server` processes.

mod common;
mod store_suite;

use origin::store::redb::RedbStore;
use origin::store::redis::{RedisOptions, RedisStore};
use origin::store::Store;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn redb_conforms() {
    store_suite::run(&|limits| {
        let dir = common::temp_dir("conformance");
        Arc::new(RedbStore::open(&dir, limits, 1 << 20, 1000).unwrap()) as Arc<dyn Store>
    });
}

fn on_redis(url: String, wait_replicas: u32) {
    store_suite::run(&|limits| {
        // Each store its own keys, on the same servers.
        let prefix = format!("t{}", origin::tokens::to_hex(&origin::tokens::new_token()));
        let options = RedisOptions {
            url: url.clone(),
            prefix,
            wait_replicas,
            wait_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        };
        Arc::new(RedisStore::connect(options, limits).unwrap()) as Arc<dyn Store>
    });
}

#[test]
fn redis_conforms() {
    let server = common::redis::Server::start(&[]);
    on_redis(server.url(), 0);
}

#[test]
fn redis_cluster_conforms() {
    let cluster = common::redis::Cluster::start(3, 1);
    // Every write waits for its master's replica.
    on_redis(cluster.url(), 1);
}

#[test]
fn a_write_that_must_reach_a_replica_fails_without_one() {
    use origin::store::{Op, UaKind, UserAgent};
    let master = common::redis::Server::start(&[]);
    let options = RedisOptions {
        url: master.url(),
        prefix: "durable".into(),
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
    };
    let store = RedisStore::connect(options, &Default::default()).unwrap();
    let ua = |n: u8| UserAgent {
        uaid: [n; 16],
        kind: UaKind::WebSocket,
        created: 1,
        seen: 0,
    };
    let refused = store.apply(&[&Op::PutUa(ua(1))]);
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("0 of 1 replicas")),
        "{refused:?}"
    );
    // With a replica in sync, the same write is answered.
    let replica =
        common::redis::Server::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !common::redis::command(master.port, "INFO replication")
        .is_some_and(|r| r.contains("state=online"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never synced"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    store.apply(&[&Op::PutUa(ua(2))]).unwrap();
    let on_replica = common::redis::command(replica.port, "DBSIZE").unwrap();
    assert_ne!(on_replica.trim(), ":0", "the replica holds the write");
}
