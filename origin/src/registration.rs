//! Making a subscription: the one set of rules (an existing channel, a
//! conflicting key, the per-user-agent cap, the user agent's record) that
//! both device protocols call (docs/protocol.md §2).

use crate::clock::now;
use crate::state::State;
use crate::store::{Op, StoreError, Subscription, UaKind, UserAgent};
use crate::tokens::{new_token, Token};

/// Whom a new subscription belongs to.
#[derive(Clone, Copy, Debug)]
pub enum Owner {
    /// A WebSocket user agent (after `hello`) and the channel it names.
    WebSocket {
        /// The user agent.
        uaid: Token,
        /// Its channel for the subscription.
        channel: Token,
        /// The user agent was made by its connection's `hello` and this is
        /// its first subscription: it holds none, and the store is not
        /// read (a round trip per device, on a shared store). Only a
        /// device that gave its new uaid to a second connection and
        /// registered there first could see a subscription more than the
        /// cap allows.
        new: bool,
    },
    /// An HTTP/2 subscription set, or a new set when `None`.
    Http2Set(Option<Token>),
}

/// Why no subscription was made.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The channel holds a subscription restricted to another key (or to
    /// none): WebSocket status 409.
    #[error("the channel is registered with another key")]
    Conflict,
    /// The user agent holds as many subscriptions as one may.
    #[error("the user agent holds {0} subscriptions, as many as one may")]
    TooMany(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes (or, for a WebSocket channel registered again with the same key,
/// finds) the subscription of `owner` restricted to `vapid`. The user
/// agent's count and the commit are one step: others registering for the
/// same user agent wait on its lock stripe.
pub async fn register(
    state: &State,
    owner: Owner,
    vapid: Option<[u8; 65]>,
) -> Result<Subscription, RegisterError> {
    let (uaid, channel, kind, new) = match owner {
        Owner::WebSocket { uaid, channel, new } => (Some(uaid), channel, UaKind::WebSocket, new),
        Owner::Http2Set(set) => (set, new_token(), UaKind::Http2, false),
    };
    let _held = match uaid {
        Some(u) => Some(state.ua_locks.lock(&u).await),
        None => None,
    };
    if let Some(u) = uaid.filter(|_| !new) {
        // At least 1, so that a limit of 0 still lets a user agent be.
        let max = state.config.limits.max_subscriptions_per_user_agent.max(1);
        let (held, count) = state.store.channel_and_count(&u, &channel, max)?;
        match held {
            // A WebSocket channel registered again with the same key.
            Some(s) if kind == UaKind::WebSocket && s.vapid == vapid => return Ok(s),
            Some(_) if kind == UaKind::WebSocket => return Err(RegisterError::Conflict),
            _ => {}
        }
        if count >= max {
            return Err(RegisterError::TooMany(max));
        }
    }
    // The record goes with every new WebSocket subscription (an older
    // connection of the uaid may have removed it with its last
    // subscription meanwhile) and with a new set.
    let (uaid, record) = match uaid {
        Some(u) => (u, kind == UaKind::WebSocket),
        None => (new_token(), true),
    };
    let subscription = Subscription {
        push: new_token(),
        uaid,
        channel,
        resource: new_token(),
        vapid,
        created: now(),
    };
    let put = Op::PutSubscription(subscription.clone());
    let ops = match record {
        true => vec![
            Op::PutUa(UserAgent {
                uaid,
                kind,
                created: now(),
                seen: crate::store::day_of(now()),
            }),
            put,
        ],
        false => vec![put],
    };
    state.committer.write(ops).await?;
    Ok(subscription)
}
