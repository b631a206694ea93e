//! The List Registration Service (docs/protocol.md §4): create, read, amend and
//! delete lists of subscriptions, push one message to all members, and
//! report a list message's delivery.

use super::response::{empty, error, with_body, AppError, Body, Refusal};
use super::{header, read_body_within};
use crate::clock::now;
use crate::copy::ListPush;
use crate::fanout;
use crate::state::State;
use crate::store::{List, ListBody, ListMember, ListMessage, Op, Subscription, NO_OWNER};
use crate::tokens::{self, new_token, Token};
use bytes::Bytes;
use http::{header as h, HeaderValue, Request, Response, StatusCode};
use serde_json::json;
use shared::headers::name;
use shared::links;
use shared::list::{self as doc, ListError, MemberPatch, Rejected, Rejection};
use shared::push::{validate_list_push, ListPayload};
use shared::route::BodyKind;
use shared::vapid::{Credentials, VapidError};
use std::sync::Arc;

/// Response header with a list's member count.
pub const MEMBER_COUNT: &str = "member-count";

fn store_err<E>(_: E) -> Refusal {
    Refusal::App(AppError::Store)
}

type Result<T> = std::result::Result<T, Refusal>;

/// The URL of a list.
fn list_url(state: &State, token: &Token) -> String {
    crate::urls::list(&state.config, token)
}

/// Verifies VAPID credentials if present; returns the verified key.
fn verified_key<B>(state: &State, req: &Request<B>) -> Result<Option<[u8; 65]>> {
    let limits = &state.config.limits;
    let creds = Credentials::parse(
        header(req, name::AUTHORIZATION),
        header(req, name::CRYPTO_KEY),
        limits,
    )?;
    match creds {
        None => Ok(None),
        Some(c) => {
            super::vapid::verify(state, &c)?;
            Ok(Some(c.key.0))
        }
    }
}

/// The list named by `token`, if the request may act on it.
fn authorized_list<B>(state: &State, token: &str, req: &Request<B>) -> Result<List> {
    let t = tokens::decode(token).ok_or(AppError::not_found("no such list"))?;
    authorized(state, &t, req)
}

/// List `t`, if the request may act on it.
fn authorized<B>(state: &State, t: &Token, req: &Request<B>) -> Result<List> {
    let list = state
        .store
        .list(t)
        .map_err(store_err)?
        .ok_or(AppError::not_found("no such list"))?;
    check_owner(state, list, req)
}

/// `list`, if the request may act on it.
fn check_owner<B>(state: &State, list: List, req: &Request<B>) -> Result<List> {
    // Credentials sent are always checked; an owned list requires its owner's.
    let key = verified_key(state, req)?;
    if let Some(owner) = &list.owner {
        match key {
            None => return Err(VapidError::Required.into()),
            Some(k) if &k != owner => return Err(VapidError::KeyMismatch.into()),
            Some(_) => {}
        }
    }
    Ok(list)
}

/// Reads and decodes a list document or patch body. Its bytes are read
/// first, under the budget of bytes being read (a client that trickles its
/// body holds only what it sent, and blocks nobody); then one of the
/// permits that bound how many documents are decoded and applied at once
/// is taken, held until the document is applied. Each wait lasts at most
/// the body timeout.
async fn read_document<'s, B>(
    state: &'s State,
    req: Request<B>,
    content_type: &'static str,
) -> Result<(Request<()>, Bytes, tokio::sync::SemaphorePermit<'s>)>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (limits, wait) = (&state.config.limits, state.config.body_read_timeout());
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, ());
    doc::check_content_type(header(&req, name::CONTENT_TYPE), content_type)?;
    let docs = state.config.max_list_documents;
    let cap = BodyKind::Document.read_cap(limits);
    let budget = Some((&state.document_bytes, docs));
    let (raw, bytes_held) = read_body_within(body, cap, wait, budget).await?;
    let permit = match tokio::time::timeout(wait, state.documents.acquire()).await {
        Ok(Ok(p)) => p,
        _ => return Err(AppError::documents(docs).into()),
    };
    let decoded = doc::decode_body(header(&req, name::CONTENT_ENCODING), &raw, limits)?;
    let decoded = Bytes::copy_from_slice(&decoded);
    // The raw body goes: the decoded copy is the document's permit's.
    drop((raw, bytes_held));
    Ok((req, decoded, permit))
}

/// Resolves a member URI to a subscription that may join `list`.
fn resolve(
    state: &State,
    uri: &str,
    partition: u32,
    owner: Option<&[u8; 65]>,
) -> std::result::Result<Subscription, Rejection> {
    let prefix = crate::urls::push_resource_prefix(&state.config);
    let push = uri
        .strip_prefix(&prefix)
        .and_then(tokens::decode)
        .ok_or(Rejection::Unknown)?;
    let sub = match state.store.subscription(&push).ok().flatten() {
        Some(s) => s,
        None if state.store.ended(&push).unwrap_or(false) => return Err(Rejection::Gone),
        None => return Err(Rejection::Unknown),
    };
    if u32::from(push[0]) % state.config.partitions != partition {
        return Err(Rejection::WrongPartition);
    }
    if sub.vapid.is_some() && sub.vapid.as_ref() != owner {
        return Err(Rejection::KeyRestricted);
    }
    Ok(sub)
}

fn reject(uri: &str, reason: Rejection) -> Rejected {
    Rejected {
        uri: uri.chars().take(256).collect(),
        reason,
    }
}

fn member_of(sub: &Subscription, m: doc::Member, joined: u64) -> ListMember {
    ListMember {
        push: sub.push,
        uaid: sub.uaid,
        channel: sub.channel,
        joined,
        expires: m.expires,
        encrypted_key: m.encrypted_key,
        header: m.header,
        previous: Vec::new(),
    }
}

/// Carries an amended member's history over: it keeps its join point, and a
/// changed key or header applies from `now_seq` on, earlier list messages
/// keeping the key of their time.
fn keep_history(m: &mut ListMember, old: ListMember, now_seq: u64) {
    m.joined = old.joined;
    m.previous = old.previous;
    if (&old.encrypted_key, &old.header) != (&m.encrypted_key, &m.header) {
        m.previous.push(crate::store::KeyVersion {
            until: now_seq,
            encrypted_key: old.encrypted_key,
            header: old.header,
        });
        let excess = m.previous.len().saturating_sub(ListMember::KEY_HISTORY);
        m.previous.drain(..excess);
    }
}

/// `POST` on a list registration service URI: creates a list.
pub async fn create<B>(state: &Arc<State>, partition: &str, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match create_inner(state, partition, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn create_inner<B>(
    state: &Arc<State>,
    partition: &str,
    req: Request<B>,
) -> Result<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = &state.config.limits;
    let partition: u32 = partition
        .parse()
        .ok()
        .filter(|p| *p < state.config.partitions)
        .ok_or(AppError::not_found("no such list registration service"))?;
    let owner = verified_key(state, &req)?;
    if owner.is_none() {
        // Lists without a VAPID key are managed by whoever holds their URL:
        // an operator's choice, counted per client address.
        if !state.config.keyless_lists {
            return Err(VapidError::Required.into());
        }
        let addr = req.extensions().get::<super::ClientAddr>().map(|a| a.0);
        state.count_keyless_creation(addr).map_err(|retry_after| {
            AppError::rate_limited(
                "list creations without a VAPID key from this address",
                retry_after,
            )
        })?;
    }
    // Lists without a VAPID key are counted together, as the service's own.
    let (counted, creations, held) = match &owner {
        Some(k) => (
            k,
            "list creations by this VAPID key",
            "lists owned by this VAPID key",
        ),
        None => (
            &NO_OWNER,
            "list creations without a VAPID key",
            "lists without a VAPID key",
        ),
    };
    let key_id: Token = counted[1..17].try_into().expect("16 bytes");
    // Both limits are checked before the document is read (and the count
    // again before the commit).
    state
        .count_list_creation(counted)
        .map_err(|retry_after| AppError::rate_limited(creations, retry_after))?;
    if state.store.owned_lists(counted).map_err(store_err)? >= limits.max_lists_per_key {
        return Err(AppError::rate_limited(held, 3600).into());
    }
    let (_, body, _permit) = read_document(state, req, doc::CONTENT_TYPE).await?;
    let parsed = doc::parse_document(&body, now() as i64, limits)?;
    let mut rejected = parsed.rejected;
    let joined = state.store.next_seq();
    // Up to a million store reads: off the async workers.
    let (st, accepted) = (state.clone(), parsed.accepted);
    let (members, refused) = tokio::task::spawn_blocking(move || {
        let mut members = Vec::with_capacity(accepted.len());
        let mut refused = Vec::new();
        for m in accepted {
            match resolve(&st, &m.uri, partition, owner.as_ref()) {
                Ok(sub) => members.push(member_of(&sub, m, joined)),
                Err(r) => refused.push(reject(&m.uri, r)),
            }
        }
        (members, refused)
    })
    .await
    .map_err(|_| AppError::Store)?;
    rejected.extend(refused);
    if !rejected.is_empty() {
        return Err(Refusal::List(ListError::Rejected(rejected.len()), rejected));
    }
    let token = new_token();
    let list = List {
        token,
        owner,
        partition,
        created: now(),
        members: 0,
    };
    let count = members.len();
    // Creations by one owner are counted and committed one at a time.
    let _locked = state.list_locks.lock(&key_id).await;
    if state.store.owned_lists(counted).map_err(store_err)? >= limits.max_lists_per_key {
        return Err(AppError::rate_limited(held, 3600).into());
    }
    state
        .committer
        .write(vec![Op::PutList(list), Op::PutMembers(token, members)])
        .await
        .map_err(store_err)?;
    let mut r = with_body(
        StatusCode::CREATED,
        "application/json",
        json!({"members": count}).to_string(),
    );
    let url = list_url(state, &token);
    r.headers_mut()
        .insert(h::LOCATION, HeaderValue::from_str(&url).expect("ascii"));
    r.headers_mut().insert(MEMBER_COUNT, count.into());
    Ok(r)
}

/// `GET` on a list: one page of members as a list document.
pub fn read<B>(state: &State, token: &str, req: &Request<B>) -> Response<Body> {
    match read_inner(state, token, req) {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

fn read_inner<B>(state: &State, token: &str, req: &Request<B>) -> Result<Response<Body>> {
    let list = authorized_list(state, token, req)?;
    let after = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("after=")))
        .and_then(tokens::decode);
    let page_size = state.config.limits.list_page_size.max(1);
    let page = state
        .store
        .list_members(&list.token, after.as_ref(), page_size)
        .map_err(store_err)?;
    let t = now() as i64;
    let members: Vec<doc::Member> = page
        .iter()
        .filter(|m| m.expires.is_none_or(|e| e > t))
        .map(|m| doc::Member {
            uri: crate::urls::push_resource(&state.config, &m.push),
            expires: m.expires,
            encrypted_key: m.encrypted_key.clone(),
            header: m.header.clone(),
        })
        .collect();
    let mut text = String::new();
    doc::write_document(&members, &mut text);
    let mut r = with_body(StatusCode::OK, doc::CONTENT_TYPE, text);
    r.headers_mut().insert(MEMBER_COUNT, list.members.into());
    if page.len() == page_size {
        let next = format!(
            "{}?after={}",
            list_url(state, &list.token),
            tokens::encode(&page.last().expect("a full page").push)
        );
        let link = links::link(&next, links::REL_NEXT);
        r.headers_mut()
            .insert(h::LINK, HeaderValue::from_str(&link).expect("ascii"));
    }
    Ok(r)
}

/// `PATCH` on a list: a merge patch; the accepted members change together.
pub async fn amend<B>(state: &Arc<State>, token: &str, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match amend_inner(state, token, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn amend_inner<B>(state: &Arc<State>, token: &str, req: Request<B>) -> Result<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = &state.config.limits;
    let list = authorized_list(state, token, &req)?;
    let (_, body, _permit) = read_document(state, req, doc::MERGE_PATCH_CONTENT_TYPE).await?;
    let parsed = doc::parse_patch(&body, now() as i64, limits)?;
    // From here to the commit, other amendments of this list wait: the
    // member count and the members merged into are read as they are now.
    let _locked = state.list_locks.lock(&list.token).await;
    let list = state
        .store
        .list(&list.token)
        .map_err(store_err)?
        .ok_or(AppError::not_found("no such list"))?;
    let mut rejected = parsed.rejected;
    let joined = state.store.next_seq();
    // Up to a million store reads: off the async workers.
    let (st, accepted) = (state.clone(), parsed.accepted);
    let list_ = list.clone();
    let merged = tokio::task::spawn_blocking(move || merge(&st, &list_, accepted, joined))
        .await
        .map_err(|_| AppError::Store)??;
    let Merged {
        upserts,
        removals,
        added,
        removed,
        refused,
    } = merged;
    rejected.extend(refused);
    let after = (list.members as usize + added).saturating_sub(removed);
    if after > limits.max_list_members {
        return Err(ListError::TooManyMembers(limits.max_list_members).into());
    }
    let (n_up, n_rm) = (upserts.len(), removals.len());
    state
        .committer
        .write(vec![
            Op::PutMembers(list.token, upserts),
            Op::RemoveMembers(list.token, removals),
        ])
        .await
        .map_err(store_err)?;
    if n_rm > 0 {
        // The copies the members removed were owed are marked dropped in
        // the background.
        let state = state.clone();
        tokio::spawn(async move { state.purge().await });
    }
    let count = state
        .store
        .list(&list.token)
        .map_err(store_err)?
        .map_or(0, |l| l.members);
    let report = json!({
        "members": count,
        "applied": n_up + n_rm,
        "rejected": doc::report(&rejected),
        "refused": rejected.len(),
    });
    let mut r = with_body(StatusCode::OK, "application/json", report.to_string());
    r.headers_mut().insert(MEMBER_COUNT, count.into());
    Ok(r)
}

/// What a merge patch makes of a list's members.
struct Merged {
    upserts: Vec<ListMember>,
    removals: Vec<Token>,
    added: usize,
    removed: usize,
    refused: Vec<Rejected>,
}

/// Resolves a patch's members against the store (up to a million reads:
/// run it on a blocking thread).
fn merge(state: &State, list: &List, accepted: Vec<MemberPatch>, joined: u64) -> Result<Merged> {
    let limits = &state.config.limits;
    let mut refused = Vec::new();
    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    let (mut added, mut removed) = (0usize, 0usize);
    let prefix = crate::urls::push_resource_prefix(&state.config);
    for p in accepted {
        let uri = p.uri().to_owned();
        match p {
            MemberPatch::Remove(_) => {
                match uri.strip_prefix(&prefix).and_then(tokens::decode) {
                    Some(push) => {
                        // Only a member's removal makes room for another.
                        let member = state.store.list_member(&list.token, &push);
                        removed += usize::from(member.map_err(store_err)?.is_some());
                        removals.push(push);
                    }
                    None => refused.push(reject(&uri, Rejection::Unknown)),
                }
            }
            upsert => match resolve(state, &uri, list.partition, list.owner.as_ref()) {
                Err(r) => refused.push(reject(&uri, r)),
                Ok(sub) => {
                    let old = state
                        .store
                        .list_member(&list.token, &sub.push)
                        .map_err(store_err)?;
                    let is_new = old.is_none();
                    let old_doc = old.as_ref().map(|o| doc::Member {
                        uri: uri.clone(),
                        expires: o.expires,
                        encrypted_key: o.encrypted_key.clone(),
                        header: o.header.clone(),
                    });
                    match upsert.apply(old_doc, limits) {
                        Ok(Some(merged)) => {
                            added += usize::from(is_new);
                            let mut m = member_of(&sub, merged, joined);
                            if let Some(old) = old {
                                keep_history(&mut m, old, joined);
                            }
                            upserts.push(m);
                        }
                        Ok(None) => {}
                        Err(r) => refused.push(reject(&uri, r)),
                    }
                }
            },
        }
    }
    Ok(Merged {
        upserts,
        removals,
        added,
        removed,
        refused,
    })
}

/// `DELETE` on a list.
pub async fn delete<B>(state: &Arc<State>, token: &str, req: &Request<B>) -> Response<Body> {
    let list = match authorized_list(state, token, req) {
        Ok(l) => l,
        Err(e) => return e.response(),
    };
    // Not in the middle of an amendment of the same list.
    let _locked = state.list_locks.lock(&list.token).await;
    match state
        .committer
        .write(vec![Op::DeleteList(list.token)])
        .await
    {
        Ok(()) => {
            // Its members and acknowledgements go in the background.
            let state = state.clone();
            tokio::spawn(async move { state.purge().await });
            empty(StatusCode::NO_CONTENT)
        }
        Err(_) => error(&AppError::Store),
    }
}

/// `POST` on a list: one message to every member.
pub async fn push<B>(state: &Arc<State>, token: &str, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match push_inner(state, token, req).await {
        Ok(r) => {
            crate::metrics::inc(&state.metrics.list_pushes_accepted);
            r
        }
        Err(e) => {
            if e.status() < 500 {
                crate::metrics::inc(&state.metrics.list_pushes_refused);
            }
            let r = e.response();
            super::hold_refusal(state, &r).await;
            r
        }
    }
}

async fn push_inner<B>(state: &Arc<State>, token: &str, req: Request<B>) -> Result<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = &state.config.limits;
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, ());
    let list = authorized_list(state, token, &req)?;
    let body = super::read_push_body(state, body, BodyKind::Message.read_cap(limits)).await?;
    let headers = super::push_headers(&req);
    let (meta, payload) = validate_list_push(&headers, &body, limits)?;
    // Told once the fan-out has finished, with the counts then.
    let (receipt, asynchronous) = super::receipt::requested(state, &req)?;
    // Amplification: what one key's pushes cost, over all its lists; then
    // the list's own count, which refunds the key's if it refuses.
    let owner = list.owner.as_ref().unwrap_or(&NO_OWNER);
    let counted = state
        .count_owner_copies(owner, list.members)
        .map_err(|retry_after| {
            AppError::rate_limited(
                "copies caused by this VAPID key's list pushes (owner_copies_per_minute)",
                retry_after,
            )
        })?;
    if let Err(retry_after) = state.count_list_push(&list.token) {
        state.refund_owner_copies(owner, list.members, counted);
        return Err(AppError::rate_limited("pushes to this list", retry_after).into());
    }
    // Not across the list's deletion: read again under its lock, which a
    // DELETE holds until its commit, and hold it until this message's.
    let _locked = state.list_locks.lock(&list.token).await;
    let list = (state.store.list(&list.token).map_err(store_err)?)
        .ok_or(AppError::not_found("no such list"))?;
    let t = now();
    // In flight until committed: no look settles past it meanwhile.
    let seq = state.list_seqs.take(&*state.store);
    let msg = ListMessage {
        id: new_token(),
        list: list.token,
        seq: seq.seq(),
        created: t,
        expires: t + u64::from(meta.ttl.0),
        urgency: meta.urgency,
        topic: meta.topic.map(|t| t.as_str().to_owned()),
        body: match payload {
            ListPayload::Empty => ListBody::Empty,
            ListPayload::Compact(c) => ListBody::Compact(c.as_str().to_owned()),
            ListPayload::Json(j) => ListBody::Json(j.as_str().to_owned()),
        },
        members: list.members,
        failed: 0,
        fanout_done: false,
        receipt,
    };
    state
        .committer
        .write(vec![Op::PutListMessage(Box::new(msg.clone()))])
        .await
        .map_err(store_err)?;
    drop(seq);
    let id = msg.id;
    let lp = Arc::new(ListPush::new(msg).map_err(store_err)?);
    let mark = state.registry.id_mark();
    // In a cluster, a node that dies before its walk ends has it taken over.
    tokio::spawn(fanout::run(state.clone(), lp, mark));
    let mut r = empty(match asynchronous {
        true => StatusCode::ACCEPTED,
        false => StatusCode::CREATED,
    });
    let url = crate::urls::list_message(&state.config, &id);
    r.headers_mut()
        .insert(h::LOCATION, HeaderValue::from_str(&url).expect("ascii"));
    r.headers_mut().insert(name::TTL, meta.ttl.0.into());
    r.headers_mut().insert(MEMBER_COUNT, list.members.into());
    Ok(r)
}

/// `GET` on a list message: how its delivery stands. An owned list's
/// messages are its owner's to read, as the list is.
pub async fn status<B>(state: &Arc<State>, token: &str, req: &Request<B>) -> Response<Body> {
    match status_inner(state, token, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn status_inner<B>(
    state: &Arc<State>,
    token: &str,
    req: &Request<B>,
) -> Result<Response<Body>> {
    let id = tokens::decode(token).ok_or(AppError::UnknownMessage)?;
    let msg = state
        .store
        .list_message(&id)
        .map_err(|_| AppError::Store)?
        .ok_or(AppError::UnknownMessage)?;
    // Its list deleted meanwhile: so is the message.
    let list = state
        .store
        .list(&msg.list)
        .map_err(store_err)?
        .ok_or(AppError::UnknownMessage)?;
    check_owner(state, list, req)?;
    let acks = state.ack_counts(&id).await.map_err(|_| AppError::Store)?;
    let backlog = state.config.list_backlog;
    let newer = state
        .store
        .newer_list_messages(&msg.list, msg.seq, backlog)
        .map_err(|_| AppError::Store)?;
    let body = crate::status::document(&msg, &acks, newer >= backlog);
    Ok(with_body(
        StatusCode::OK,
        "application/json",
        body.to_string(),
    ))
}
