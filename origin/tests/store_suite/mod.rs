//! The conformance suite every storage backend passes: what the service
//! relies on a `Store` to do, checked through the trait alone.

use origin::store::policy::LIST_MESSAGE_GRACE;
use origin::store::{
    AckCounts, AckOutcome, Encoding, List, ListBody, ListMember, ListMessage, Message, Op, Store,
    Subscription, UaKind, UserAgent,
};
use origin::tokens::{new_token, Token};
use shared::limits::Limits;
use std::sync::Arc;

/// Makes an empty store keeping `limits`' caps.
pub type Fresh<'a> = &'a dyn Fn(&Limits) -> Arc<dyn Store>;

/// Runs every check against stores made by `fresh`.
pub fn run(fresh: Fresh<'_>) {
    type Check = fn(Fresh<'_>);
    let checks: [(&str, Check); 17] = [
        ("a fresh store answers every read", fresh_store),
        ("subscriptions and their indexes", subscriptions),
        (
            "a user agent record goes only without subscriptions",
            user_agents,
        ),
        ("messages in order, by id, expiring", messages),
        ("a topic replaces the message it names", topics),
        (
            "a subscription keeps its newest messages up to the cap",
            per_subscription_cap,
        ),
        (
            "a receipt subscription keeps its newest receipts",
            receipt_cap,
        ),
        ("lists, members and their counts", lists),
        ("a large list reads in pages", large_list),
        (
            "list messages, their fan-out and acknowledgements",
            list_messages,
        ),
        ("deleting a list takes what hangs on it", delete_list),
        (
            "a member's settled copies rise and leave with it",
            settled_copies,
        ),
        (
            "copies owed to members that left are dropped",
            members_that_left,
        ),
        ("sequence numbers rise", sequence),
        (
            "a deleted list's rows go in small writes",
            purged_in_small_writes,
        ),
        ("an ended subscription is remembered, then forgotten", ended),
        (
            "user agents by the day last seen, and their end",
            idle_user_agents,
        ),
    ];
    for (name, check) in checks {
        eprintln!("store conformance: {name}");
        check(fresh);
    }
}

fn limits(per_subscription: usize, receipts: usize) -> Limits {
    Limits {
        max_stored_per_subscription: per_subscription,
        max_stored_receipts: receipts,
        ..Default::default()
    }
}

fn apply(s: &dyn Store, ops: &[Op]) {
    let refs: Vec<&Op> = ops.iter().collect();
    s.apply(&refs).unwrap();
}

const FAR: u64 = u64::MAX / 4;

fn sub(uaid: Token) -> Subscription {
    Subscription {
        push: new_token(),
        uaid,
        channel: new_token(),
        resource: new_token(),
        vapid: Some([4; 65]),
        created: 1,
    }
}

fn ua(kind: UaKind) -> UserAgent {
    UserAgent {
        uaid: new_token(),
        kind,
        created: 1,
        seen: DAY,
    }
}

const DAY: u64 = 86_400;

fn msg(s: &dyn Store, sub: &Subscription, topic: Option<&str>, expires: u64) -> Message {
    Message {
        id: new_token(),
        uaid: sub.uaid,
        push: sub.push,
        channel: sub.channel,
        seq: s.next_seq(),
        expires,
        urgency: Default::default(),
        topic: topic.map(str::to_owned),
        receipt: Some(new_token()),
        encoding: Encoding::Aes128gcm,
        body: bytes::Bytes::from(vec![7u8; 100]),
        list_message: None,
    }
}

fn ids(s: &dyn Store, uaid: &Token) -> Vec<Token> {
    s.messages(uaid, 0, 0, 1000)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect()
}

fn fresh_store(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let t = new_token();
    assert!(s.subscription(&t).unwrap().is_none());
    assert!(s.subscription_by_resource(&t).unwrap().is_none());
    assert!(s.subscription_by_channel(&t, &t).unwrap().is_none());
    assert!(s.subscriptions_of(&t).unwrap().is_empty());
    assert_eq!(s.channel_and_count(&t, &t, 10).unwrap(), (None, 0));
    assert!(s.user_agent(&t).unwrap().is_none());
    assert!(s.messages(&t, 0, 0, 10).unwrap().is_empty());
    assert!(s.message(&t).unwrap().is_none());
    assert!(s.expired(0, 10).unwrap().is_empty());
    assert_eq!(s.expired_list_items(FAR, 10).unwrap(), (vec![], vec![]));
    assert!(s.list(&t).unwrap().is_none());
    assert!(s.list_members(&t, None, 10).unwrap().is_empty());
    assert!(s.list_member(&t, &t).unwrap().is_none());
    assert!(s.lists_of(&t).unwrap().is_empty());
    assert_eq!(s.owned_lists(&[4; 65]).unwrap(), 0);
    assert!(s.list_message(&t).unwrap().is_none());
    assert!(s.unfinished_fanouts().unwrap().is_empty());
    assert!(s.list_message_ids_since(&t, 0, 10).unwrap().is_empty());
    assert_eq!(s.copies_settled(&t, &t).unwrap(), 0);
    assert!(s.copies_answered(&t, &[(t, 1)]).unwrap().is_empty());
    assert_eq!(s.copies_acked(&t).unwrap(), AckCounts::default());
    let c = s.counts().unwrap();
    assert_eq!(
        (c.messages, c.list_messages, c.lists, c.subscriptions),
        (0, 0, 0, 0)
    );
    // Deleting what is not there is not an error.
    apply(
        &*s,
        &[
            Op::DeleteSubscription {
                push: t,
                forget_at: 1,
            },
            Op::DeleteMessage(t),
            Op::SeenUa { uaid: t, day: 1 },
            Op::EndUa {
                uaid: t,
                forget_at: 1,
            },
            Op::ForgetEnded(vec![t]),
            Op::DeleteList(t),
            Op::DeleteListMessage(t),
            Op::DeleteUaIfEmpty(t),
            Op::RemoveMembers(t, vec![t]),
            Op::FinishListMessage { id: t, failed: 0 },
            Op::Purge { budget: 10 },
        ],
    );
    assert!(s.list_message(&t).unwrap().is_none());
    assert!(!s.ended(&t).unwrap(), "nothing ended that never was");
    assert!(!s.purge_pending().unwrap());
    assert!(s.user_agent(&t).unwrap().is_none(), "seen: not made");
    assert!(s.ended_to_forget(FAR, 10).unwrap().is_empty());
    assert!(ids_idle(&*s, false, FAR, 10).unwrap().is_empty());
    assert!(ids_idle(&*s, true, FAR, 10).unwrap().is_empty());
}

fn subscriptions(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let u = ua(UaKind::WebSocket);
    let (a, b) = (sub(u.uaid), sub(u.uaid));
    apply(
        &*s,
        &[
            Op::PutUa(u.clone()),
            Op::PutSubscription(a.clone()),
            Op::PutSubscription(b.clone()),
        ],
    );
    assert_eq!(s.user_agent(&u.uaid).unwrap(), Some(u.clone()));
    assert_eq!(s.subscription(&a.push).unwrap(), Some(a.clone()));
    assert_eq!(
        s.subscription_by_resource(&b.resource).unwrap(),
        Some(b.clone())
    );
    assert_eq!(
        s.subscription_by_channel(&u.uaid, &a.channel).unwrap(),
        Some(a.clone())
    );
    let mut all = s.subscriptions_of(&u.uaid).unwrap();
    all.sort_by_key(|x| x.push);
    let mut want = vec![a.clone(), b.clone()];
    want.sort_by_key(|x| x.push);
    assert_eq!(all, want);
    assert_eq!(s.counts().unwrap().subscriptions, 2);
    // What registering a channel needs, in one read.
    assert_eq!(
        s.channel_and_count(&u.uaid, &a.channel, 10).unwrap().0,
        Some(a.clone()),
        "the channel's subscription"
    );
    assert_eq!(
        s.channel_and_count(&u.uaid, &new_token(), 10).unwrap(),
        (None, 2)
    );
    assert_eq!(
        s.channel_and_count(&u.uaid, &new_token(), 1).unwrap(),
        (None, 1),
        "counted up to at_most"
    );
    assert_eq!(
        s.channel_and_count(&new_token(), &a.channel, 10).unwrap(),
        (None, 0)
    );
    let m = msg(&*s, &a, None, FAR);
    let kept = msg(&*s, &b, None, FAR);
    apply(
        &*s,
        &[
            Op::PutMessage(Box::new(m.clone())),
            Op::PutMessage(Box::new(kept.clone())),
        ],
    );
    // A deleted subscription takes its indexes and its messages along.
    apply(
        &*s,
        &[Op::DeleteSubscription {
            push: a.push,
            forget_at: FAR,
        }],
    );
    assert!(s.subscription(&a.push).unwrap().is_none());
    assert!(s.subscription_by_resource(&a.resource).unwrap().is_none());
    assert!(s
        .subscription_by_channel(&u.uaid, &a.channel)
        .unwrap()
        .is_none());
    assert!(s.message(&m.id).unwrap().is_none());
    assert_eq!(ids(&*s, &u.uaid), vec![kept.id]);
    assert_eq!(s.subscriptions_of(&u.uaid).unwrap(), vec![b.clone()]);
    assert_eq!(s.counts().unwrap().subscriptions, 1);
    // Rewriting a subscription replaces it.
    let mut b2 = b.clone();
    b2.vapid = None;
    apply(&*s, &[Op::PutSubscription(b2.clone())]);
    assert_eq!(s.subscription(&b.push).unwrap(), Some(b2));
    assert_eq!(s.counts().unwrap().subscriptions, 1);
}

fn user_agents(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let u = ua(UaKind::Http2);
    let a = sub(u.uaid);
    apply(&*s, &[Op::PutUa(u.clone()), Op::PutSubscription(a.clone())]);
    apply(&*s, &[Op::DeleteUaIfEmpty(u.uaid)]);
    assert!(
        s.user_agent(&u.uaid).unwrap().is_some(),
        "a subscription is left"
    );
    apply(
        &*s,
        &[
            Op::DeleteSubscription {
                push: a.push,
                forget_at: FAR,
            },
            Op::DeleteUaIfEmpty(u.uaid),
        ],
    );
    assert!(s.user_agent(&u.uaid).unwrap().is_none());
}

fn messages(fresh: Fresh<'_>) {
    let s = fresh(&limits(100, 10));
    let u = ua(UaKind::WebSocket);
    let a = sub(u.uaid);
    apply(&*s, &[Op::PutUa(u.clone()), Op::PutSubscription(a.clone())]);
    let soon = msg(&*s, &a, None, 1000);
    let later: Vec<Message> = (0..5).map(|_| msg(&*s, &a, None, FAR)).collect();
    // One batch, and one write each: both commit.
    apply(&*s, &[Op::PutMessage(Box::new(soon.clone()))]);
    apply(
        &*s,
        &later
            .iter()
            .map(|m| Op::PutMessage(Box::new(m.clone())))
            .collect::<Vec<_>>(),
    );
    assert_eq!(s.message(&later[2].id).unwrap(), Some(later[2].clone()));
    assert_eq!(s.counts().unwrap().messages, 6);
    // In sequence order; expired ones are not read; after a sequence; up to a limit.
    let all = s.messages(&u.uaid, 0, 0, 100).unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let live = s.messages(&u.uaid, 0, 1000, 100).unwrap();
    assert_eq!(live, later);
    let after = s.messages(&u.uaid, later[1].seq, 1000, 2).unwrap();
    assert_eq!(after, later[2..4].to_vec());
    // The sweep finds what expired, and nothing else.
    assert!(s.expired(999, 10).unwrap().is_empty());
    assert_eq!(s.expired(1000, 10).unwrap(), vec![soon.id]);
    apply(&*s, &[Op::DeleteMessage(soon.id)]);
    assert!(s.expired(1000, 10).unwrap().is_empty());
    assert!(s.message(&soon.id).unwrap().is_none());
    assert_eq!(s.counts().unwrap().messages, 5);
    // Another user agent's queue is its own.
    let other = sub(new_token());
    apply(
        &*s,
        &[Op::PutMessage(Box::new(msg(&*s, &other, None, FAR)))],
    );
    assert_eq!(ids(&*s, &u.uaid).len(), 5);
    assert_eq!(ids(&*s, &other.uaid).len(), 1);
}

fn topics(fresh: Fresh<'_>) {
    let s = fresh(&limits(100, 10));
    let uaid = new_token();
    let (a, b) = (sub(uaid), sub(uaid));
    let first = msg(&*s, &a, Some("news"), FAR);
    let other = msg(&*s, &b, Some("news"), FAR);
    let plain = msg(&*s, &a, None, FAR);
    apply(
        &*s,
        &[
            Op::PutMessage(Box::new(first.clone())),
            Op::PutMessage(Box::new(other.clone())),
            Op::PutMessage(Box::new(plain.clone())),
        ],
    );
    let second = msg(&*s, &a, Some("news"), FAR);
    apply(&*s, &[Op::PutMessage(Box::new(second.clone()))]);
    assert!(s.message(&first.id).unwrap().is_none(), "replaced");
    assert_eq!(ids(&*s, &uaid), vec![other.id, plain.id, second.id]);
    // Within one batch too.
    let third = msg(&*s, &a, Some("news"), FAR);
    let fourth = msg(&*s, &a, Some("news"), FAR);
    apply(
        &*s,
        &[
            Op::PutMessage(Box::new(third)),
            Op::PutMessage(Box::new(fourth.clone())),
        ],
    );
    assert_eq!(ids(&*s, &uaid), vec![other.id, plain.id, fourth.id]);
    // A delivered message frees its topic; the next one is simply stored.
    apply(&*s, &[Op::DeleteMessage(fourth.id)]);
    let fifth = msg(&*s, &a, Some("news"), FAR);
    apply(&*s, &[Op::PutMessage(Box::new(fifth.clone()))]);
    assert_eq!(ids(&*s, &uaid), vec![other.id, plain.id, fifth.id]);
}

fn per_subscription_cap(fresh: Fresh<'_>) {
    let s = fresh(&limits(3, 10));
    let uaid = new_token();
    let (a, b) = (sub(uaid), sub(uaid));
    let other = msg(&*s, &b, None, FAR);
    let sent: Vec<Message> = (0..5).map(|_| msg(&*s, &a, None, FAR)).collect();
    apply(&*s, &[Op::PutMessage(Box::new(other.clone()))]);
    for m in &sent {
        apply(&*s, &[Op::PutMessage(Box::new(m.clone()))]);
    }
    let mut want = vec![other.id];
    want.extend(sent[2..].iter().map(|m| m.id));
    assert_eq!(ids(&*s, &uaid), want, "the oldest went first");
    assert!(s.message(&sent[0].id).unwrap().is_none());
    assert_eq!(
        s.expired(FAR, 100).unwrap().len(),
        4,
        "evicted ones left the sweep"
    );
}

fn receipt(s: &dyn Store, to: Token) -> Message {
    Message {
        id: new_token(),
        uaid: to,
        push: new_token(),
        channel: [0; 16],
        seq: s.next_seq(),
        expires: FAR,
        urgency: Default::default(),
        topic: None,
        receipt: None,
        encoding: Encoding::Receipt,
        body: bytes::Bytes::from_static(b"204"),
        list_message: None,
    }
}

fn receipt_cap(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 3));
    let (a, b) = (ua(UaKind::Receipts), ua(UaKind::Receipts));
    apply(&*s, &[Op::PutUa(a.clone()), Op::PutUa(b.clone())]);
    let sent: Vec<Message> = (0..5).map(|_| receipt(&*s, a.uaid)).collect();
    for m in &sent {
        apply(&*s, &[Op::PutMessage(Box::new(m.clone()))]);
    }
    apply(&*s, &[Op::PutMessage(Box::new(receipt(&*s, b.uaid)))]);
    let newest: Vec<Token> = sent[2..].iter().map(|m| m.id).collect();
    assert_eq!(ids(&*s, &a.uaid), newest, "the oldest went first");
    assert_eq!(
        ids(&*s, &b.uaid).len(),
        1,
        "another subscription counts apart"
    );
    // A fetched receipt makes room: the next one takes its place, and no
    // other goes.
    apply(&*s, &[Op::DeleteMessage(sent[2].id)]);
    let next = receipt(&*s, a.uaid);
    apply(&*s, &[Op::PutMessage(Box::new(next.clone()))]);
    assert_eq!(ids(&*s, &a.uaid), vec![sent[3].id, sent[4].id, next.id]);
}

fn list(owner: Option<[u8; 65]>) -> List {
    List {
        token: new_token(),
        owner,
        partition: 0,
        created: 1,
        members: 0,
    }
}

fn member(push: Token, joined: u64, expires: Option<i64>) -> ListMember {
    ListMember {
        push,
        uaid: new_token(),
        channel: new_token(),
        joined,
        expires,
        encrypted_key: Some("a2V5".into()),
        header: Some("{\"kid\":\"1\"}".into()),
        previous: vec![],
    }
}

fn lists(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let owner = [4u8; 65];
    let (l1, l2, keyless) = (list(Some(owner)), list(Some(owner)), list(None));
    apply(
        &*s,
        &[
            Op::PutList(l1.clone()),
            Op::PutList(l2.clone()),
            Op::PutList(keyless.clone()),
        ],
    );
    assert_eq!(s.owned_lists(&owner).unwrap(), 2);
    assert_eq!(s.owned_lists(&origin::store::NO_OWNER).unwrap(), 1);
    assert_eq!(s.counts().unwrap().lists, 3);
    let a = sub(new_token());
    let m1 = member(a.push, 5, Some(2000));
    let m2 = member(new_token(), 5, None);
    apply(
        &*s,
        &[
            Op::PutSubscription(a.clone()),
            Op::PutMembers(l1.token, vec![m1.clone(), m2.clone()]),
            Op::PutMembers(l2.token, vec![m1.clone()]),
        ],
    );
    assert_eq!(s.list(&l1.token).unwrap().unwrap().members, 2);
    // Putting a member again replaces it without counting it twice.
    let mut m1b = m1.clone();
    m1b.expires = Some(3000);
    apply(&*s, &[Op::PutMembers(l1.token, vec![m1b.clone()])]);
    assert_eq!(s.list(&l1.token).unwrap().unwrap().members, 2);
    assert_eq!(
        s.list_member(&l1.token, &a.push).unwrap(),
        Some(m1b.clone())
    );
    let mut of = s.lists_of(&a.push).unwrap();
    of.sort();
    let mut want = vec![l1.token, l2.token];
    want.sort();
    assert_eq!(of, want);
    // Member expiry: the replaced time no longer counts.
    let (_, due) = s.expired_list_items(2500, 10).unwrap();
    assert_eq!(due, vec![(l2.token, a.push)]);
    let (_, due) = s.expired_list_items(3000, 10).unwrap();
    assert_eq!(due.len(), 2);
    apply(
        &*s,
        &[Op::RemoveMembers(l1.token, vec![m2.push, new_token()])],
    );
    assert_eq!(s.list(&l1.token).unwrap().unwrap().members, 1);
    assert!(s.list_member(&l1.token, &m2.push).unwrap().is_none());
    // A deleted subscription leaves every list it was in.
    apply(
        &*s,
        &[Op::DeleteSubscription {
            push: a.push,
            forget_at: FAR,
        }],
    );
    assert_eq!(s.list(&l1.token).unwrap().unwrap().members, 0);
    assert_eq!(s.list(&l2.token).unwrap().unwrap().members, 0);
    assert!(s.lists_of(&a.push).unwrap().is_empty());
    assert_eq!(s.expired_list_items(FAR, 10).unwrap(), (vec![], vec![]));
}

fn settled_copies(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let l = list(None);
    let (p, q) = (new_token(), new_token());
    apply(
        &*s,
        &[
            Op::PutList(l.clone()),
            Op::PutMembers(l.token, vec![member(p, 1, None)]),
        ],
    );
    let settle = |push, through| Op::SettleCopies {
        list: l.token,
        push,
        through,
    };
    // Only rising, and only for a member.
    apply(&*s, &[settle(p, 7), settle(q, 7)]);
    assert_eq!(s.copies_settled(&l.token, &p).unwrap(), 7);
    assert_eq!(s.copies_settled(&l.token, &q).unwrap(), 0);
    apply(&*s, &[settle(p, 5)]);
    assert_eq!(s.copies_settled(&l.token, &p).unwrap(), 7);
    apply(&*s, &[settle(p, 9)]);
    assert_eq!(s.copies_settled(&l.token, &p).unwrap(), 9);
    // Putting the member again (a key change) keeps it.
    apply(
        &*s,
        &[Op::PutMembers(l.token, vec![member(p, 1, Some(5000))])],
    );
    assert_eq!(s.copies_settled(&l.token, &p).unwrap(), 9);
    // A member that leaves and comes back starts again.
    apply(&*s, &[Op::RemoveMembers(l.token, vec![p])]);
    assert_eq!(s.copies_settled(&l.token, &p).unwrap(), 0);
    apply(
        &*s,
        &[
            Op::PutMembers(l.token, vec![member(p, 10, None)]),
            settle(p, 12),
        ],
    );
    assert_eq!(s.copies_settled(&l.token, &p).unwrap(), 12);
    // A deleted list's members take theirs with them.
    apply(&*s, &[Op::DeleteList(l.token), Op::Purge { budget: 100 }]);
    assert_eq!(s.copies_settled(&l.token, &p).unwrap(), 0);
}

fn large_list(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let l = list(Some([4; 65]));
    apply(&*s, &[Op::PutList(l.clone())]);
    let mut pushes: Vec<Token> = (0..2500).map(|_| new_token()).collect();
    for chunk in pushes.chunks(1000) {
        let members = chunk.iter().map(|p| member(*p, 1, None)).collect();
        apply(&*s, &[Op::PutMembers(l.token, members)]);
    }
    pushes.sort();
    assert_eq!(s.list(&l.token).unwrap().unwrap().members, 2500);
    let mut read = Vec::new();
    let mut after = None;
    loop {
        let page = s.list_members(&l.token, after.as_ref(), 1000).unwrap();
        assert!(page.len() <= 1000);
        let Some(last) = page.last() else { break };
        after = Some(last.push);
        read.extend(page.iter().map(|m| m.push));
    }
    assert_eq!(read, pushes, "every member once, in token order");
}

fn list_message(list: &List, seq: u64, expires: u64, done: bool) -> ListMessage {
    ListMessage {
        id: new_token(),
        list: list.token,
        seq,
        created: 1,
        expires,
        urgency: Default::default(),
        topic: Some("t".into()),
        body: ListBody::Compact("a..b.c.d".into()),
        members: 2,
        failed: 0,
        fanout_done: done,
        receipt: None,
    }
}

fn list_messages(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let l = list(Some([4; 65]));
    let old = list_message(&l, s.next_seq(), 1000, true);
    let mid = list_message(&l, s.next_seq(), FAR, false);
    let new = list_message(&l, s.next_seq(), FAR, false);
    apply(
        &*s,
        &[
            Op::PutList(l.clone()),
            Op::PutListMessage(Box::new(old.clone())),
            Op::PutListMessage(Box::new(mid.clone())),
            Op::PutListMessage(Box::new(new.clone())),
        ],
    );
    assert_eq!(s.list_message(&mid.id).unwrap(), Some(mid.clone()));
    assert_eq!(s.counts().unwrap().list_messages, 3);
    // Messages after one, counted up to a bound.
    assert_eq!(s.newer_list_messages(&l.token, old.seq, 10).unwrap(), 2);
    assert_eq!(s.newer_list_messages(&l.token, old.seq, 1).unwrap(), 1);
    assert_eq!(s.newer_list_messages(&l.token, mid.seq, 10).unwrap(), 1);
    assert_eq!(s.newer_list_messages(&l.token, new.seq, 10).unwrap(), 0);
    assert_eq!(s.newer_list_messages(&new_token(), 0, 10).unwrap(), 0);
    let mut unfinished: Vec<Token> = s
        .unfinished_fanouts()
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    unfinished.sort();
    let mut want = vec![mid.id, new.id];
    want.sort();
    assert_eq!(unfinished, want);
    apply(
        &*s,
        &[Op::FinishListMessage {
            id: mid.id,
            failed: 1,
        }],
    );
    let done = s.list_message(&mid.id).unwrap().unwrap();
    assert!(done.fanout_done);
    assert_eq!(done.failed, 1);
    assert_eq!(
        s.unfinished_fanouts()
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        vec![new.id]
    );
    // Newest first, after a sequence, up to `newest`.
    let since = |after: u64, newest: usize| -> Vec<(u64, Token)> {
        s.list_message_ids_since(&l.token, after, newest).unwrap()
    };
    let all = vec![(new.seq, new.id), (mid.seq, mid.id), (old.seq, old.id)];
    assert_eq!(since(0, 10), all);
    assert_eq!(since(mid.seq, 10), vec![(new.seq, new.id)]);
    assert_eq!(since(0, 1), vec![(new.seq, new.id)]);
    assert!(since(new.seq, 10).is_empty());
    // Acknowledged copies.
    let (p, q, r) = (new_token(), new_token(), new_token());
    let ack = |push, outcome| Op::AckCopy {
        list_message: new.id,
        push,
        outcome,
    };
    apply(
        &*s,
        &[
            ack(p, AckOutcome::Delivered),
            ack(p, AckOutcome::Delivered),
            ack(q, AckOutcome::Undecryptable),
            ack(r, AckOutcome::Delivered),
        ],
    );
    // A later answer for the same copy replaces the first.
    apply(&*s, &[ack(r, AckOutcome::Rejected)]);
    // A member's answers among those asked about, in one read.
    let answered = |push, ids: &[Token]| {
        let ids: Vec<(Token, u64)> = ids.iter().map(|id| (*id, 1)).collect();
        let mut v: Vec<Token> = s
            .copies_answered(&push, &ids)
            .unwrap()
            .into_iter()
            .collect();
        v.sort();
        v
    };
    assert_eq!(answered(p, &[new.id]), vec![new.id]);
    assert_eq!(answered(p, &[new.id, mid.id, new.id]), vec![new.id]);
    assert!(answered(p, &[]).is_empty());
    assert_eq!(answered(q, &[new.id]), vec![new.id]);
    assert!(answered(p, &[mid.id]).is_empty());
    assert!(answered(new_token(), &[new.id]).is_empty());
    // Messages created from now on: a store that keeps answers in memory
    // finds them there.
    let later = ListMessage {
        created: origin::clock::now() + 10,
        ..list_message(&l, s.next_seq(), FAR, true)
    };
    apply(&*s, &[Op::PutListMessage(Box::new(later.clone()))]);
    apply(
        &*s,
        &[Op::AckCopy {
            list_message: later.id,
            push: p,
            outcome: AckOutcome::Delivered,
        }],
    );
    let asked = [(later.id, later.created), (mid.id, later.created)];
    let found = s.copies_answered(&p, &asked).unwrap();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec![later.id]);
    apply(&*s, &[Op::DeleteListMessage(later.id)]);
    let counts = s.copies_acked(&new.id).unwrap();
    assert_eq!(
        counts,
        AckCounts {
            delivered: 1,
            undecryptable: 1,
            rejected: 1,
            dropped: 0
        }
    );
    assert_eq!(counts.answered(), 3);
    // A list message's record outlives its TTL by the grace period.
    let (due, _) = s
        .expired_list_items(1000 + LIST_MESSAGE_GRACE - 1, 10)
        .unwrap();
    assert!(due.is_empty());
    let (due, _) = s.expired_list_items(1000 + LIST_MESSAGE_GRACE, 10).unwrap();
    assert_eq!(due, vec![old.id]);
    apply(
        &*s,
        &[Op::DeleteListMessage(new.id), Op::DeleteListMessage(old.id)],
    );
    purge_all(&*s, 1);
    assert!(s.list_message(&new.id).unwrap().is_none());
    assert_eq!(s.copies_acked(&new.id).unwrap(), AckCounts::default());
    assert!(s.unfinished_fanouts().unwrap().is_empty());
    assert_eq!(since(0, 10), vec![(mid.seq, mid.id)]);
    // Finishing a message that went meanwhile writes nothing.
    apply(
        &*s,
        &[Op::FinishListMessage {
            id: new.id,
            failed: 0,
        }],
    );
    assert!(s.list_message(&new.id).unwrap().is_none());
}

fn delete_list(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let owner = [4u8; 65];
    let (l, kept) = (list(Some(owner)), list(Some(owner)));
    let a = sub(new_token());
    let lm = list_message(&l, s.next_seq(), FAR, false);
    apply(
        &*s,
        &[
            Op::PutList(l.clone()),
            Op::PutList(kept.clone()),
            Op::PutSubscription(a.clone()),
            Op::PutMembers(l.token, vec![member(a.push, 1, Some(5000))]),
            Op::PutMembers(kept.token, vec![member(a.push, 1, None)]),
            Op::PutListMessage(Box::new(lm.clone())),
            Op::AckCopy {
                list_message: lm.id,
                push: a.push,
                outcome: AckOutcome::Delivered,
            },
        ],
    );
    apply(&*s, &[Op::DeleteList(l.token)]);
    assert!(s.list(&l.token).unwrap().is_none());
    assert!(s.purge_pending().unwrap(), "its member and acknowledgement");
    purge_all(&*s, 1);
    assert_eq!(s.owned_lists(&owner).unwrap(), 1);
    assert!(s.list_members(&l.token, None, 10).unwrap().is_empty());
    assert_eq!(s.lists_of(&a.push).unwrap(), vec![kept.token]);
    assert!(s.list_message(&lm.id).unwrap().is_none());
    assert_eq!(s.copies_acked(&lm.id).unwrap(), AckCounts::default());
    assert!(s.unfinished_fanouts().unwrap().is_empty());
    assert_eq!(s.expired_list_items(FAR, 10).unwrap(), (vec![], vec![]));
    assert_eq!(s.list(&kept.token).unwrap().unwrap().members, 1);
}

/// Purges `budget` rows a write until nothing is left; how many writes.
fn members_that_left(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let l = list(None);
    let (p, q, r) = (new_token(), new_token(), new_token());
    apply(
        &*s,
        &[
            Op::PutList(l.clone()),
            Op::PutMembers(l.token, vec![member(p, 0, None), member(q, 0, None)]),
        ],
    );
    let (m1, m2, m3) = (
        list_message(&l, 10, 10_000, true),
        list_message(&l, 20, 10_000, true),
        list_message(&l, 30, 10_000, true),
    );
    apply(
        &*s,
        &[
            Op::PutListMessage(Box::new(m1.clone())),
            Op::PutListMessage(Box::new(m2.clone())),
            Op::PutMembers(l.token, vec![member(r, 25, None)]),
            Op::AckCopy {
                list_message: m1.id,
                push: p,
                outcome: AckOutcome::Delivered,
            },
        ],
    );
    // p answered m1, not m2; q neither; r joined after both. A message
    // after they left is not theirs.
    apply(&*s, &[Op::RemoveMembers(l.token, vec![p, q, r])]);
    apply(&*s, &[Op::PutListMessage(Box::new(m3.clone()))]);
    assert!(s.purge_pending().unwrap());
    assert!(purge_all(&*s, 1) >= 3, "a message at a time");
    let counts = |m: &ListMessage| s.copies_acked(&m.id).unwrap();
    assert_eq!((counts(&m1).delivered, counts(&m1).dropped), (1, 1));
    assert_eq!((counts(&m2).delivered, counts(&m2).dropped), (0, 2));
    assert_eq!(counts(&m3).answered(), 0);
    // An answer that comes after all counts instead.
    apply(
        &*s,
        &[Op::AckCopy {
            list_message: m2.id,
            push: q,
            outcome: AckOutcome::Delivered,
        }],
    );
    assert_eq!((counts(&m2).delivered, counts(&m2).dropped), (1, 1));
    assert_eq!(counts(&m2).answered(), 2);
    // Deleted with their list message.
    apply(&*s, &[Op::DeleteListMessage(m2.id)]);
    purge_all(&*s, 1);
    assert_eq!(counts(&m2).answered(), 0);
    assert!(!s.purge_pending().unwrap());
}

fn purge_all(s: &dyn Store, budget: usize) -> usize {
    let mut writes = 0;
    while s.purge_pending().unwrap() {
        apply(s, &[Op::Purge { budget }]);
        writes += 1;
        assert!(writes < 10_000, "the purge ends");
    }
    writes
}

fn purged_in_small_writes(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let (l, kept) = (list(None), list(None));
    let subs: Vec<Subscription> = (0..25).map(|_| sub(new_token())).collect();
    let members: Vec<ListMember> = subs.iter().map(|x| member(x.push, 1, Some(9000))).collect();
    let lm = list_message(&l, s.next_seq(), FAR, false);
    let mut ops = vec![
        Op::PutList(l.clone()),
        Op::PutList(kept.clone()),
        Op::PutMembers(l.token, members),
        Op::PutMembers(kept.token, vec![member(subs[0].push, 1, None)]),
        Op::PutListMessage(Box::new(lm.clone())),
    ];
    ops.extend(subs.iter().take(12).map(|x| Op::AckCopy {
        list_message: lm.id,
        push: x.push,
        outcome: AckOutcome::Delivered,
    }));
    apply(&*s, &ops);
    assert!(!s.purge_pending().unwrap());
    apply(&*s, &[Op::DeleteList(l.token)]);
    // 12 acknowledgements and 25 members, 5 rows a write.
    let writes = purge_all(&*s, 5);
    assert!((8..=10).contains(&writes), "{writes} writes");
    assert!(s.list_members(&l.token, None, 100).unwrap().is_empty());
    assert_eq!(s.copies_acked(&lm.id).unwrap(), AckCounts::default());
    assert_eq!(s.lists_of(&subs[0].push).unwrap(), vec![kept.token]);
    assert!(s.lists_of(&subs[1].push).unwrap().is_empty());
    assert_eq!(s.expired_list_items(FAR, 100).unwrap(), (vec![], vec![]));
    assert_eq!(s.list(&kept.token).unwrap().unwrap().members, 1);
    // Nothing left: a purge is a no-op.
    apply(&*s, &[Op::Purge { budget: 5 }]);
}

fn sequence(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let mut last = s.next_seq();
    for _ in 0..1000 {
        let n = s.next_seq();
        assert!(n > last);
        last = n;
    }
}

/// The user agents of [`Store::idle_user_agents`], without their days.
fn ids_idle(s: &dyn Store, receipts: bool, day: u64, limit: usize) -> Result<Vec<Token>, ()> {
    Ok(s.idle_user_agents(receipts, day, limit)
        .unwrap()
        .into_iter()
        .map(|(_, u)| u)
        .collect())
}

fn ended(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let u = ua(UaKind::WebSocket);
    let (a, b, c) = (sub(u.uaid), sub(u.uaid), sub(u.uaid));
    apply(
        &*s,
        &[
            Op::PutUa(u.clone()),
            Op::PutSubscription(a.clone()),
            Op::PutSubscription(b.clone()),
            Op::PutSubscription(c.clone()),
        ],
    );
    assert!(!s.ended(&a.push).unwrap());
    apply(
        &*s,
        &[
            Op::DeleteSubscription {
                push: a.push,
                forget_at: 2000,
            },
            Op::DeleteSubscription {
                push: b.push,
                forget_at: 1000,
            },
        ],
    );
    assert!(s.subscription(&a.push).unwrap().is_none());
    assert!(s.ended(&a.push).unwrap() && s.ended(&b.push).unwrap());
    assert!(!s.ended(&c.push).unwrap(), "a live one has not ended");
    // Ending what has already ended keeps the first date.
    apply(
        &*s,
        &[Op::DeleteSubscription {
            push: b.push,
            forget_at: 5000,
        }],
    );
    assert_eq!(s.ended_to_forget(999, 10).unwrap(), Vec::<Token>::new());
    assert_eq!(s.ended_to_forget(1000, 10).unwrap(), vec![b.push]);
    assert_eq!(s.ended_to_forget(FAR, 10).unwrap(), vec![b.push, a.push]);
    assert_eq!(s.ended_to_forget(FAR, 1).unwrap(), vec![b.push]);
    apply(&*s, &[Op::ForgetEnded(vec![b.push])]);
    assert!(!s.ended(&b.push).unwrap());
    assert_eq!(s.ended_to_forget(FAR, 10).unwrap(), vec![a.push]);
}

fn idle_user_agents(fresh: Fresh<'_>) {
    let s = fresh(&limits(10, 10));
    let (old, new) = (ua(UaKind::WebSocket), ua(UaKind::Http2));
    let rs = ua(UaKind::Receipts);
    let new = UserAgent {
        seen: 5 * DAY,
        ..new
    };
    let (a, b) = (sub(old.uaid), sub(old.uaid));
    let m = msg(&*s, &a, None, FAR);
    let mut receipt = msg(&*s, &a, None, FAR);
    receipt.uaid = rs.uaid;
    receipt.encoding = Encoding::Receipt;
    apply(
        &*s,
        &[
            Op::PutUa(old.clone()),
            Op::PutUa(new.clone()),
            Op::PutUa(rs.clone()),
            Op::PutSubscription(a.clone()),
            Op::PutSubscription(b.clone()),
            Op::PutMessage(Box::new(m.clone())),
            Op::PutMessage(Box::new(receipt.clone())),
        ],
    );
    // Devices and receipt subscriptions are in indexes of their own.
    assert_eq!(ids_idle(&*s, false, DAY, 10).unwrap(), Vec::<Token>::new());
    assert_eq!(ids_idle(&*s, false, 2 * DAY, 10).unwrap(), vec![old.uaid]);
    let mut both = vec![old.uaid, new.uaid];
    let got = ids_idle(&*s, false, 6 * DAY, 10).unwrap();
    assert_eq!(got, both, "oldest first");
    both.truncate(1);
    assert_eq!(ids_idle(&*s, false, 6 * DAY, 1).unwrap(), both);
    assert_eq!(ids_idle(&*s, true, 6 * DAY, 10).unwrap(), vec![rs.uaid]);
    // Seen again: it moves in its index, once a day at most.
    apply(
        &*s,
        &[Op::SeenUa {
            uaid: old.uaid,
            day: 7 * DAY,
        }],
    );
    assert_eq!(s.user_agent(&old.uaid).unwrap().unwrap().seen, 7 * DAY);
    assert_eq!(ids_idle(&*s, false, 6 * DAY, 10).unwrap(), vec![new.uaid]);
    apply(
        &*s,
        &[Op::SeenUa {
            uaid: old.uaid,
            day: 3 * DAY,
        }],
    );
    assert_eq!(
        s.user_agent(&old.uaid).unwrap().unwrap().seen,
        7 * DAY,
        "never back in time"
    );
    // A record rewritten moves in its index too.
    let again = UserAgent {
        seen: 2 * DAY,
        ..s.user_agent(&old.uaid).unwrap().unwrap()
    };
    apply(&*s, &[Op::ReplaceUa(again)]);
    assert_eq!(ids_idle(&*s, false, 3 * DAY, 10).unwrap(), vec![old.uaid]);
    assert_eq!(
        ids_idle(&*s, false, 6 * DAY, 10).unwrap(),
        vec![old.uaid, new.uaid]
    );
    apply(
        &*s,
        &[Op::SeenUa {
            uaid: old.uaid,
            day: 7 * DAY,
        }],
    );
    // The days come with the entries; an entry forgotten is gone, whatever
    // the record says.
    assert_eq!(
        s.idle_user_agents(false, 6 * DAY, 10).unwrap(),
        vec![(5 * DAY, new.uaid)]
    );
    apply(
        &*s,
        &[Op::ForgetSeen {
            receipts: false,
            day: 5 * DAY,
            uaid: new.uaid,
        }],
    );
    assert!(ids_idle(&*s, false, 6 * DAY, 10).unwrap().is_empty());
    assert!(
        s.user_agent(&new.uaid).unwrap().is_some(),
        "its record stays"
    );
    apply(&*s, &[Op::ReplaceUa(new.clone())]);
    // Its end takes its subscriptions (remembered as ended), its messages
    // and its record.
    apply(
        &*s,
        &[Op::EndUa {
            uaid: old.uaid,
            forget_at: 100,
        }],
    );
    assert!(s.user_agent(&old.uaid).unwrap().is_none());
    assert!(s.subscription(&a.push).unwrap().is_none());
    assert!(s.subscription(&b.push).unwrap().is_none());
    assert!(s.ended(&a.push).unwrap() && s.ended(&b.push).unwrap());
    assert!(s.message(&m.id).unwrap().is_none());
    assert!(s.subscriptions_of(&old.uaid).unwrap().is_empty());
    assert_eq!(ids_idle(&*s, false, FAR, 10).unwrap(), vec![new.uaid]);
    assert_eq!(s.counts().unwrap().subscriptions, 0);
    // A receipt subscription's end takes its receipts.
    apply(
        &*s,
        &[Op::EndUa {
            uaid: rs.uaid,
            forget_at: 100,
        }],
    );
    assert!(s.user_agent(&rs.uaid).unwrap().is_none());
    assert!(s.message(&receipt.id).unwrap().is_none());
    assert!(ids_idle(&*s, true, FAR, 10).unwrap().is_empty());
    assert_eq!(s.counts().unwrap().messages, 0);
}
