//! A list message's status document: what `GET /lm/…` answers and what a
//! list push's receipt carries (docs/protocol.md §4).

use crate::clock::now;
use crate::store::{AckCounts, ListMessage};
use serde_json::json;
use shared::list as doc;

/// The status of `msg`, whose copies devices answered as `acks` counts;
/// `beyond_backlog` if `--list-backlog` newer messages of its list came
/// after it, so that a member yet to answer will never be offered it.
pub fn document(msg: &ListMessage, acks: &AckCounts, beyond_backlog: bool) -> serde_json::Value {
    let open = msg.members.saturating_sub(acks.answered() + msg.failed);
    let expired = msg.expires <= now();
    let (stored, expired, dropped) = match (expired, beyond_backlog) {
        (true, _) => (0, open, 0),
        (false, true) => (0, 0, open),
        (false, false) => (open, 0, 0),
    };
    json!({
        "members": msg.members,
        "delivered": acks.delivered,
        "undecryptable": acks.undecryptable,
        "rejected": acks.rejected,
        "stored": stored,
        "expired": expired,
        "dropped": dropped + acks.dropped,
        "failed": msg.failed,
        "fanout_finished": msg.fanout_done,
        "expires": doc::format_expires(msg.expires as i64),
    })
}
