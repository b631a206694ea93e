//! Push message receipts (RFC 8030 §5.1, §6.3): the receipt subscriptions
//! named in `Push-Receipt` (the receipts themselves are sent by
//! `State::send_receipt` when a device acknowledges a message).

use super::response::AppError;
use crate::state::State;
use crate::store::UaKind;
use crate::tokens::{self, Token};
use shared::headers::{name, preference};

/// The receipt subscription a push names in `Push-Receipt`, if any, and
/// whether it asks with it to be answered at once (`Prefer:
/// respond-async`, RFC 8030 §5.1: `202`).
pub fn requested<B>(
    state: &State,
    req: &http::Request<B>,
) -> Result<(Option<Token>, bool), AppError> {
    let field = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let Some(url) = field(name::PUSH_RECEIPT) else {
        return Ok((None, false));
    };
    let asynchronous = preference(field(name::PREFER), "respond-async").is_some();
    Ok((Some(resolve(state, url)?), asynchronous))
}

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
