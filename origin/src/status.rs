//! A list message's status document: what `GET /lm/…` answers and what a
//! list push's receipt carries (docs/protocol.md §4).

use crate::clock::now;
use crate::store::{AckCounts, ListMessage};
use serde_json::json;
use shared::list as doc;

/// The status of `msg`, whose copies devices answered as `acks` counts.
pub fn document(msg: &ListMessage, acks: &AckCounts) -> serde_json::Value {
    let open = msg.members.saturating_sub(acks.answered() + msg.failed);
    let expired = msg.expires <= now();
    json!({
        "members": msg.members,
        "delivered": acks.delivered,
        "undecryptable": acks.undecryptable,
        "rejected": acks.rejected,
        "stored": if expired { 0 } else { open },
        "expired": if expired { open } else { 0 },
        "failed": msg.failed,
        "fanout_finished": msg.fanout_done,
        "expires": doc::format_expires(msg.expires as i64),
    })
}
