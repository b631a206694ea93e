//! The store conformance suite against every backend: redb here, Redis
//! standalone and Redis Cluster on real `redis-server` processes.

mod common;
mod store_suite;

use origin::store::redb::RedbStore;
use origin::store::Store;
use std::sync::Arc;

#[test]
fn redb_conforms() {
    store_suite::run(&|limits| {
        let dir = common::temp_dir("conformance");
        Arc::new(RedbStore::open(&dir, limits, 1 << 20).unwrap()) as Arc<dyn Store>
    });
}
