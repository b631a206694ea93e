//! The application server's side for one subscription: an encrypted push
//! with VAPID, TTL, Urgency and Topic (RFC 8030 §5, RFC 8291, RFC 8292).

use crate::error::Error;
use crate::vapid::Vapid;
use crate::{ece, http, Subscription};
use shared::headers::{name, Topic, Urgency};
use shared::links;

/// The delivery options of a push (RFC 8030 §5.2–5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushOptions {
    /// Seconds the service keeps the message for an absent device.
    pub ttl: u32,
    /// How urgent it is; `None` leaves the header out (the service's default is `normal`).
    pub urgency: Option<Urgency>,
    /// A newer message with the same topic replaces an undelivered one.
    pub topic: Option<Topic>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            ttl: 86_400,
            urgency: None,
            topic: None,
        }
    }
}

/// What the service said to an accepted push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// `201` (or `202` for an asynchronous receipt request).
    pub status: u16,
    /// The push message resource (or list message resource).
    pub location: Option<String>,
    /// The TTL the service used (it lowers too large ones).
    pub ttl: Option<u64>,
    /// The list registration service of the subscription's partition.
    pub multi: Option<String>,
    /// For a list push: how many members it went to.
    pub member_count: Option<u64>,
}

/// The request headers of a push: options, content coding and VAPID.
pub(crate) fn push_headers(
    url: &str,
    opts: &PushOptions,
    content: Option<(&'static str, &'static str)>,
    vapid: Option<&Vapid>,
) -> Vec<(&'static str, String)> {
    let mut hs = vec![(name::TTL, opts.ttl.to_string())];
    if let Some(u) = opts.urgency {
        hs.push((name::URGENCY, u.as_str().to_owned()));
    }
    if let Some(t) = &opts.topic {
        hs.push((name::TOPIC, t.as_str().to_owned()));
    }
    if let Some((name, value)) = content {
        hs.push((name, value.to_owned()));
    }
    if let Some(v) = vapid {
        hs.push((name::AUTHORIZATION, v.authorization(url, crate::now())));
    }
    hs
}

/// POSTs a push and reads the service's answer.
pub(crate) async fn post(
    url: &str,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<Sent, Error> {
    let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = http::request("POST", url, &hs, body).await?.success()?;
    Ok(Sent {
        status: r.status,
        location: r.header("location").map(str::to_owned),
        ttl: r.header(name::TTL).and_then(|t| t.parse().ok()),
        multi: r.link(links::REL_MULTI),
        member_count: r.header("member-count").and_then(|t| t.parse().ok()),
    })
}

/// Sends one message to a subscription: `payload` encrypted with
/// `aes128gcm` for its keys, or no body at all for `None`.
pub async fn send(
    sub: &Subscription,
    payload: Option<&[u8]>,
    opts: &PushOptions,
    vapid: Option<&Vapid>,
) -> Result<Sent, Error> {
    let (body, content) = match payload {
        Some(p) => (
            ece::encrypt(p, &sub.public_key()?, &sub.auth()?)?,
            Some((name::CONTENT_ENCODING, "aes128gcm")),
        ),
        None => (Vec::new(), None),
    };
    let hs = push_headers(&sub.endpoint, opts, content, vapid);
    post(&sub.endpoint, &hs, body).await
}

/// Cancels an undelivered message by its push message resource.
pub async fn cancel(message_url: &str) -> Result<(), Error> {
    http::request("DELETE", message_url, &[], Vec::new())
        .await?
        .success()
        .map(|_| ())
}
