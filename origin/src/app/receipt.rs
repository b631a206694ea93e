//! Push message receipts (RFC 8030 §5.1, §6.3): receipt subscriptions and
//! the receipts sent to them when a device acknowledges a message.

use super::response::AppError;
use crate::state::{now, State};
use crate::store::{Encoding, Message, UaKind};
use crate::tokens::{self, new_token, Token};
use bytes::Bytes;
use std::sync::Arc;

/// The URL of a receipt subscription.
pub fn subscription_url(state: &State, token: &Token) -> String {
    format!("{}/rs/{}", state.config.device_url, tokens::encode(token))
}

/// Resolves a `Push-Receipt` URL to a receipt subscription of this service.
pub fn resolve(state: &State, url: &str) -> Result<Token, AppError> {
    let prefix = format!("{}/rs/", state.config.device_url);
    let token = url
        .trim()
        .strip_prefix(&prefix)
        .and_then(tokens::decode)
        .ok_or(AppError::BadReceipt)?;
    match state.store.user_agent(&token) {
        Ok(Some(ua)) if ua.kind == UaKind::Receipts => Ok(token),
        Ok(_) => Err(AppError::BadReceipt),
        Err(_) => Err(AppError::Store),
    }
}

/// Sends a receipt for `acked` to the receipt subscription `to`: status 204
/// (acknowledged) or 410 (expired undelivered). Runs in the background.
pub fn send(state: &Arc<State>, acked: &Message, to: Token, status: u16) {
    let receipt = Message {
        id: new_token(),
        uaid: to,
        push: acked.id,
        channel: [0; 16],
        seq: 0,
        expires: now() + state.config.receipt_ttl_secs,
        urgency: Default::default(),
        topic: None,
        receipt: None,
        encoding: Encoding::Receipt,
        body: Bytes::from(status.to_string()),
        list_message: None,
    };
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = state.deliver(receipt, false).await {
            tracing::error!("storing a receipt: {e}");
        }
    });
}
