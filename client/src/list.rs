//! The List Registration Service from the application server's side
//! (docs/protocol.md §4): create a list, amend it with merge patches, rotate its
//! group key, push one message to every member, follow the delivery.
//!
//! The application keeps a [`ListFile`]: the list's URL, the group key, and
//! each member's subscription keys, so that the key can be wrapped again.

use crate::app::{self, PushOptions, Sent};
use crate::error::{Error, RejectedMember};
use crate::jwe::{self, GroupKey};
use crate::subscription::SubscriptionKeys;
use crate::vapid::Vapid;
use crate::{http, Subscription};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::headers::name;
use shared::links;
use shared::list::{CONTENT_TYPE, MERGE_PATCH_CONTENT_TYPE};
use std::collections::BTreeMap;

/// Members sent in one `PATCH` at most (well within the service's body limit).
pub const PATCH_BATCH: usize = 5000;

/// What the application keeps about one list; holds the group key, so it
/// is written readable by its owner only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFile {
    /// The list resource (a capability URL).
    pub list: String,
    /// The list registration service it was created at.
    pub service: String,
    /// The content encryption algorithm of its messages.
    pub enc: String,
    /// The group key, base64url.
    pub group_key: String,
    /// How many times the key was rotated.
    pub key_version: u32,
    /// The VAPID key file the list is owned by, if any (the CLI reuses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vapid_key_file: Option<String>,
    /// The members' subscription keys, by push resource URL.
    pub members: BTreeMap<String, SubscriptionKeys>,
}

impl ListFile {
    /// The group key.
    pub fn key(&self) -> Result<GroupKey, Error> {
        Ok(GroupKey::from_b64(&self.group_key)?)
    }
}

/// The service's answer to a `PATCH`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PatchReport {
    /// Members after the change.
    pub members: u64,
    /// Entries applied.
    pub applied: u64,
    /// Entries refused, with the reason (the service lists the first 1,000).
    #[serde(default)]
    pub rejected: Vec<RejectedMember>,
    /// How many entries were refused in all (0 from a service that does
    /// not say: then `rejected` holds them all).
    #[serde(default)]
    pub refused: u64,
}

impl PatchReport {
    fn merge(&mut self, other: PatchReport) {
        self.members = other.members;
        self.applied += other.applied;
        self.refused = self.refused.max(self.rejected.len() as u64)
            + other.refused.max(other.rejected.len() as u64);
        self.rejected.extend(other.rejected);
    }
}

/// The outcome of a key rotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// The service's answers, merged.
    pub report: PatchReport,
    /// Members of the list whose keys the list file does not hold: they
    /// keep the old wrapped key and cannot read new messages.
    pub without_keys: Vec<String>,
    /// Members in the file that had left the list; dropped from the file.
    pub departed: Vec<String>,
}

/// How a list message's delivery stands (`GET` on its resource).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Status {
    /// Members it was sent to.
    pub members: u64,
    /// Copies acknowledged by devices.
    pub delivered: u64,
    /// Copies waiting for their device.
    pub stored: u64,
    /// Copies whose TTL ended first.
    pub expired: u64,
    /// Copies that could not be made.
    pub failed: u64,
    /// Copies members will never be offered (`--list-backlog` newer
    /// messages came after this one).
    #[serde(default)]
    pub dropped: u64,
    /// Whether the fan-out has gone through every member.
    pub fanout_finished: bool,
    /// When the message expires (RFC 3339).
    #[serde(default)]
    pub expires: Option<String>,
}

impl Status {
    /// Nothing left to wait for: fanned out, and no copy waiting for its device.
    pub fn done(&self) -> bool {
        self.fanout_finished && self.stored == 0
    }
}

fn auth(vapid: Option<&Vapid>, url: &str) -> Vec<(&'static str, String)> {
    vapid
        .map(|v| vec![(name::AUTHORIZATION, v.authorization(url, crate::now()))])
        .unwrap_or_default()
}

async fn call(
    method: &str,
    url: &str,
    mut headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    vapid: Option<&Vapid>,
) -> Result<http::Response, Error> {
    headers.extend(auth(vapid, url));
    let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http::request(method, url, &hs, body).await?.success()
}

/// A member's document entry: the group key wrapped for its `p256dh`.
fn entry(key: &GroupKey, keys: &SubscriptionKeys) -> Result<Value, Error> {
    let pk = crate::keys::parse_public(&keys.p256dh)?;
    let w = jwe::wrap(key, &pk);
    Ok(serde_json::json!({"encrypted_key": w.encrypted_key, "header": w.header}))
}

/// Creates a list of `subs` at a list registration service, with a new
/// group key wrapped for each. With `vapid`, the list is owned by that key.
pub async fn create(
    service: &str,
    subs: &[Subscription],
    vapid: Option<&Vapid>,
) -> Result<ListFile, Error> {
    let key = GroupKey::generate();
    let mut doc = Map::new();
    let mut members = BTreeMap::new();
    for s in subs {
        doc.insert(s.endpoint.clone(), entry(&key, &s.keys)?);
        members.insert(s.endpoint.clone(), s.keys.clone());
    }
    let r = call(
        "POST",
        service,
        vec![(name::CONTENT_TYPE, CONTENT_TYPE.to_owned())],
        Value::Object(doc).to_string().into_bytes(),
        vapid,
    )
    .await?;
    let list = r
        .header("location")
        .ok_or_else(|| Error::Protocol("a created list has no Location".into()))?
        .to_owned();
    Ok(ListFile {
        list,
        service: service.to_owned(),
        enc: jwe::ENC.to_owned(),
        group_key: key.to_b64(),
        key_version: 1,
        vapid_key_file: None,
        members,
    })
}

/// Sends a merge patch in batches; returns the merged report.
async fn patch(
    list: &str,
    entries: Vec<(String, Value)>,
    vapid: Option<&Vapid>,
) -> Result<PatchReport, Error> {
    let mut report = PatchReport::default();
    for chunk in entries.chunks(PATCH_BATCH) {
        let doc: Map<String, Value> = chunk.iter().cloned().collect();
        let r = call(
            "PATCH",
            list,
            vec![(name::CONTENT_TYPE, MERGE_PATCH_CONTENT_TYPE.to_owned())],
            Value::Object(doc).to_string().into_bytes(),
            vapid,
        )
        .await?;
        let part: PatchReport = serde_json::from_slice(&r.body)
            .map_err(|e| Error::Protocol(format!("a PATCH report: {e}")))?;
        report.merge(part);
    }
    Ok(report)
}

fn rejected_uris(r: &PatchReport) -> std::collections::HashSet<&str> {
    r.rejected.iter().map(|m| m.uri.as_str()).collect()
}

/// Adds members (or replaces their entries), with the current group key.
pub async fn add(
    file: &mut ListFile,
    subs: &[Subscription],
    vapid: Option<&Vapid>,
) -> Result<PatchReport, Error> {
    let key = file.key()?;
    let entries = subs
        .iter()
        .map(|s| Ok((s.endpoint.clone(), entry(&key, &s.keys)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let report = patch(&file.list, entries, vapid).await?;
    let refused = rejected_uris(&report);
    for s in subs {
        if !refused.contains(s.endpoint.as_str()) {
            file.members.insert(s.endpoint.clone(), s.keys.clone());
        }
    }
    Ok(report)
}

/// Removes members by push resource URL.
pub async fn remove(
    file: &mut ListFile,
    endpoints: &[String],
    vapid: Option<&Vapid>,
) -> Result<PatchReport, Error> {
    let entries = endpoints.iter().map(|e| (e.clone(), Value::Null)).collect();
    let report = patch(&file.list, entries, vapid).await?;
    let refused = rejected_uris(&report);
    for e in endpoints {
        if !refused.contains(e.as_str()) {
            file.members.remove(e);
        }
    }
    Ok(report)
}

/// Reads the list's members (every page) and its member count.
pub async fn members(
    list: &str,
    vapid: Option<&Vapid>,
) -> Result<(u64, Map<String, Value>), Error> {
    let mut all = Map::new();
    let mut count = 0;
    let mut next = Some(list.to_owned());
    while let Some(url) = next {
        let r = call("GET", &url, Vec::new(), Vec::new(), vapid).await?;
        count = r
            .header("member-count")
            .and_then(|c| c.parse().ok())
            .unwrap_or(count);
        match r.json()? {
            Value::Object(m) => all.extend(m),
            _ => return Err(Error::Protocol("a list page is not a JSON object".into())),
        }
        next = r.link(links::REL_NEXT);
    }
    Ok((count, all))
}

/// Replaces the group key: a new key, wrapped again for every current
/// member, sent as merge patches. Copies of earlier messages that a device
/// has not fetched yet are wrapped with the member's key at delivery, so
/// they cannot be read after a rotation.
pub async fn rotate_key(file: &mut ListFile, vapid: Option<&Vapid>) -> Result<Rotation, Error> {
    let (_, current) = members(&file.list, vapid).await?;
    let key = GroupKey::generate();
    let mut rotation = Rotation::default();
    let mut entries = Vec::new();
    for uri in current.keys() {
        match file.members.get(uri) {
            Some(k) => entries.push((uri.clone(), entry(&key, k)?)),
            None => rotation.without_keys.push(uri.clone()),
        }
    }
    rotation.departed = file
        .members
        .keys()
        .filter(|u| !current.contains_key(*u))
        .cloned()
        .collect();
    rotation.report = patch(&file.list, entries, vapid).await?;
    for u in rotation
        .departed
        .iter()
        .map(String::as_str)
        .chain(rejected_uris(&rotation.report))
        .collect::<Vec<_>>()
    {
        file.members.remove(u);
    }
    file.group_key = key.to_b64();
    file.key_version += 1;
    Ok(rotation)
}

/// Pushes one message to every member: `text` encrypted under the group
/// key (JWE JSON serialization), or no body for `None`.
pub async fn push(
    file: &ListFile,
    text: Option<&[u8]>,
    opts: &PushOptions,
    vapid: Option<&Vapid>,
) -> Result<Sent, Error> {
    let (body, content) = match text {
        Some(t) => (
            jwe::encrypt(&file.key()?, t).to_string().into_bytes(),
            Some((name::CONTENT_TYPE, shared::jwe::CONTENT_TYPE_JSON)),
        ),
        None => (Vec::new(), None),
    };
    let hs = app::push_headers(&file.list, opts, content, vapid);
    app::post(&file.list, &hs, body).await
}

/// Deletes the list.
pub async fn delete(file: &ListFile, vapid: Option<&Vapid>) -> Result<(), Error> {
    call("DELETE", &file.list, Vec::new(), Vec::new(), vapid)
        .await
        .map(|_| ())
}

/// Reads how a list message's delivery stands.
pub async fn status(message_url: &str, vapid: Option<&Vapid>) -> Result<Status, Error> {
    let r = call("GET", message_url, Vec::new(), Vec::new(), vapid).await?;
    serde_json::from_slice(&r.body)
        .map_err(|e| Error::Protocol(format!("a list message status: {e}")))
}
