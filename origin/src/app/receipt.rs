//! Push message receipts (RFC 8030 §5.1, §6.3): the receipt subscriptions
//! named in `Push-Receipt` (the receipts themselves are sent by
//! `State::send_receipt` when a device acknowledges a message).

use super::response::AppError;
use crate::state::State;
use crate::store::UaKind;
use crate::tokens::{self, Token};

/// Resolves a `Push-Receipt` URL to a receipt subscription of this service.
pub fn resolve(state: &State, url: &str) -> Result<Token, AppError> {
    let prefix = crate::urls::receipt_subscription_prefix(&state.config);
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
