//! The embedded backend on redb: one file, ACID commits, fsync on commit.

use super::kv::{self, Read, Shape, Visit, Write, MSGS, RECEIPTS_HELD, TABLES, UAS};
use super::layered::{Backend, Layered};
use super::{codec, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The `META` key set once `RECEIPTS_HELD` counts every stored receipt.
const RECEIPTS_COUNTED: &str = "receipts_counted";
/// The `META` key set once every user agent is in its seen index.
const SEEN_INDEXED: &str = "seen_indexed";
/// name → counter.
const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");

fn def(t: kv::Table) -> Def {
    TableDefinition::new(t.name)
}

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// The service's store on redb.
pub type RedbStore = Layered<Redb>;

/// The redb engine under a [`RedbStore`].
pub struct Redb {
    db: Database,
    seq: AtomicU64,
    path: std::path::PathBuf,
}

impl Layered<Redb> {
    /// Opens (or creates) the store in `dir`, keeping the caps of `limits`,
    /// at most `cache_bytes` of the file's pages in memory, and up to
    /// `answers_kept` acknowledged list copies indexed by member in memory.
    pub fn open(
        dir: &Path,
        limits: &shared::limits::Limits,
        cache_bytes: usize,
        answers_kept: usize,
    ) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let path = dir.join("push.redb");
        let mut builder = Database::builder();
        builder.set_cache_size(cache_bytes);
        let db = builder.create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            e => err(e),
        })?;
        let txn = db.begin_write().map_err(err)?;
        let seq = {
            for t in TABLES {
                txn.open_table(def(t)).map_err(err)?;
            }
            let mut meta = txn.open_table(META).map_err(err)?;
            // Stores from before receipts were counted: count them once.
            if meta.get(RECEIPTS_COUNTED).map_err(err)?.is_none() {
                count_receipts(&txn)?;
                meta.insert(RECEIPTS_COUNTED, 1).map_err(err)?;
            }
            // Stores from before the idle expiry: every user agent seen now.
            if meta.get(SEEN_INDEXED).map_err(err)?.is_none() {
                index_seen(&txn, super::day_of(crate::clock::now()))?;
                meta.insert(SEEN_INDEXED, 1).map_err(err)?;
            }
            let v = meta.get("seq").map_err(err)?.map(|g| g.value());
            v.unwrap_or(0)
        };
        txn.commit().map_err(err)?;
        let engine = Redb {
            db,
            seq: AtomicU64::new(seq + 1),
            path,
        };
        Ok(Layered::new(engine, limits, answers_kept))
    }
}

/// Fills `RECEIPTS_HELD` from the stored messages of every receipt
/// subscription (done once, for a file written before it was kept).
fn count_receipts(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let uas = txn.open_table(def(UAS)).map_err(err)?;
    let msgs = txn.open_table(def(MSGS)).map_err(err)?;
    let mut held = txn.open_table(def(RECEIPTS_HELD)).map_err(err)?;
    for kv in uas.iter().map_err(err)? {
        let (_, v) = kv.map_err(err)?;
        let ua = codec::read_user_agent(v.value())?;
        if ua.kind != super::UaKind::Receipts {
            continue;
        }
        let end = kv::prefix_end(&ua.uaid);
        let n = msgs.range(&ua.uaid[..]..&end[..]).map_err(err)?.count() as u64;
        if n > 0 {
            held.insert(&ua.uaid[..], &n.to_be_bytes()[..])
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Puts every user agent in its seen index as seen on `day` (done once,
/// for a file written before the index was kept).
fn index_seen(txn: &redb::WriteTransaction, day: u64) -> Result<(), StoreError> {
    let mut uas = txn.open_table(def(UAS)).map_err(err)?;
    let mut seen = txn.open_table(def(kv::UA_SEEN)).map_err(err)?;
    let mut polled = txn.open_table(def(kv::RS_SEEN)).map_err(err)?;
    let mut all = Vec::new();
    for kv in uas.iter().map_err(err)? {
        let (_, v) = kv.map_err(err)?;
        all.push(codec::read_user_agent(v.value())?);
    }
    for mut ua in all {
        ua.seen = day;
        uas.insert(&ua.uaid[..], &codec::user_agent(&ua)[..])
            .map_err(err)?;
        let key: [u8; 24] = kv::cat(&[&day.to_be_bytes(), &ua.uaid]);
        match ua.kind {
            super::UaKind::Receipts => polled.insert(&key[..], &[][..]),
            _ => seen.insert(&key[..], &[][..]),
        }
        .map_err(err)?;
    }
    Ok(())
}

/// A key and value as redb lends them.
type Pair<'a> = (
    redb::AccessGuard<'a, &'static [u8]>,
    redb::AccessGuard<'a, &'static [u8]>,
);

/// Visits a redb range in order or reverse.
fn visit_range<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    rev: bool,
    visit: &mut Visit<'_>,
) -> Result<(), StoreError> {
    let range = t.range::<&[u8]>((lo, hi)).map_err(err)?;
    let mut each = |kv: Result<Pair<'_>, redb::StorageError>| {
        let (k, v) = kv.map_err(err)?;
        visit(k.value(), v.value())
    };
    if rev {
        for kv in range.rev() {
            if !each(kv)? {
                break;
            }
        }
    } else {
        for kv in range {
            if !each(kv)? {
                break;
            }
        }
    }
    Ok(())
}

/// A read-only table of the store.
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A read transaction, opening each table once, when it is first read (an
/// opening is a lookup of its own: many reads of one table, such as a
/// `hello`'s acknowledgement lookups, pay it once).
pub struct RedbRead {
    txn: redb::ReadTransaction,
    tables: [Option<ReadTable>; TABLES.len()],
}

impl RedbRead {
    fn table(&mut self, t: kv::Table) -> Result<&ReadTable, StoreError> {
        let slot = &mut self.tables[t.id];
        if slot.is_none() {
            *slot = Some(self.txn.open_table(def(t)).map_err(err)?);
        }
        Ok(slot.as_ref().expect("opened"))
    }
}

impl Read for RedbRead {
    fn get<T>(
        &mut self,
        t: kv::Table,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let table = self.table(t)?;
        let v = table.get(key).map_err(err)?;
        v.map(|g| f(g.value())).transpose()
    }

    fn range(
        &mut self,
        t: kv::Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        rev: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        visit_range(self.table(t)?, lo, hi, rev, visit)
    }

    fn len(&mut self, t: kv::Table) -> Result<u64, StoreError> {
        self.table(t)?.len().map_err(err)
    }
}

/// The tables of one write transaction, in `kv::TABLES` order.
pub struct RedbWrite<'t> {
    tables: Vec<redb::Table<'t, &'static [u8], &'static [u8]>>,
}

impl Read for RedbWrite<'_> {
    fn get<T>(
        &mut self,
        t: kv::Table,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let v = self.tables[t.id].get(key).map_err(err)?;
        v.map(|g| f(g.value())).transpose()
    }

    fn range(
        &mut self,
        t: kv::Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        rev: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        visit_range(&self.tables[t.id], lo, hi, rev, visit)
    }

    fn len(&mut self, t: kv::Table) -> Result<u64, StoreError> {
        self.tables[t.id].len().map_err(err)
    }
}

impl Write for RedbWrite<'_> {
    fn put(&mut self, t: kv::Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        debug_assert!(
            !matches!(t.shape, Shape::Grouped { group, suffix } if key.len() != group + suffix)
        );
        self.tables[t.id].insert(key, value).map_err(err)?;
        Ok(())
    }

    fn take(&mut self, t: kv::Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.tables[t.id].remove(key).map_err(err)?;
        Ok(old.map(|g| g.value().to_vec()))
    }

    fn delete(&mut self, t: kv::Table, key: &[u8]) -> Result<(), StoreError> {
        self.tables[t.id].remove(key).map_err(err)?;
        Ok(())
    }
}

impl Backend for Redb {
    type Reader<'a> = RedbRead;
    type Writer<'a> = RedbWrite<'a>;

    fn reader(&self) -> Result<RedbRead, StoreError> {
        Ok(RedbRead {
            txn: self.db.begin_read().map_err(err)?,
            tables: std::array::from_fn(|_| None),
        })
    }

    fn write(
        &self,
        f: &mut dyn FnMut(&mut RedbWrite<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut w = RedbWrite {
                tables: TABLES
                    .iter()
                    .map(|t| txn.open_table(def(*t)).map_err(err))
                    .collect::<Result<_, _>>()?,
            };
            f(&mut w)?;
            let mut meta = txn.open_table(META).map_err(err)?;
            meta.insert("seq", self.seq.load(Ordering::SeqCst))
                .map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    fn bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Encoding, Message, Op, Store, UaKind, UserAgent};
    use crate::tokens::{new_token, Token};

    fn limits(receipts: usize) -> shared::limits::Limits {
        shared::limits::Limits {
            max_stored_receipts: receipts,
            ..Default::default()
        }
    }

    fn receipt(s: &RedbStore, to: Token) -> Message {
        Message {
            id: new_token(),
            uaid: to,
            push: new_token(),
            channel: [0; 16],
            seq: s.next_seq(),
            expires: u64::MAX / 2,
            urgency: Default::default(),
            topic: None,
            receipt: None,
            encoding: Encoding::Receipt,
            body: bytes::Bytes::from_static(b"204"),
            list_message: None,
        }
    }

    #[test]
    fn a_file_from_before_receipts_were_counted_is_counted_when_opened() {
        let dir = std::env::temp_dir().join(format!(
            "redb-receipts-{}",
            crate::tokens::to_hex(&new_token())
        ));
        let s = RedbStore::open(&dir, &limits(10), 1 << 20, 1000).unwrap();
        let uaid = [7u8; 16];
        let ua = UserAgent {
            uaid,
            kind: UaKind::Receipts,
            created: 1,
            seen: 0,
        };
        s.apply(&[&Op::PutUa(ua)]).unwrap();
        let sent: Vec<Message> = (0..3).map(|_| receipt(&s, uaid)).collect();
        for m in &sent {
            s.apply(&[&Op::PutMessage(Box::new(m.clone()))]).unwrap();
        }
        drop(s);
        {
            let db = Database::create(dir.join("push.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(def(RECEIPTS_HELD)).unwrap();
            txn.open_table(META)
                .unwrap()
                .remove(RECEIPTS_COUNTED)
                .unwrap();
            txn.commit().unwrap();
        }
        // Counted at open, a lowered limit holds at the next receipt.
        let s = RedbStore::open(&dir, &limits(2), 1 << 20, 1000).unwrap();
        let last = receipt(&s, uaid);
        s.apply(&[&Op::PutMessage(Box::new(last.clone()))]).unwrap();
        let held: Vec<Token> = s
            .messages(&uaid, 0, 0, 100)
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(held, vec![sent[2].id, last.id]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
