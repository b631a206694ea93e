//! `DELETE` on a push message resource: cancels an undelivered message.

use super::response::{empty, error, AppError, Body};
use crate::state::State;
use crate::store::Op;
use crate::tokens;
use http::{Response, StatusCode};

/// Cancels the stored message named by `token`.
pub async fn cancel(state: &State, token: &str) -> Response<Body> {
    let Some(id) = tokens::decode(token) else {
        return error(&AppError::UnknownMessage);
    };
    match state.store.message(&id) {
        Ok(Some(_)) => match state.committer.write(vec![Op::DeleteMessage(id)]).await {
            Ok(()) => empty(StatusCode::NO_CONTENT),
            Err(_) => error(&AppError::Store),
        },
        Ok(None) => error(&AppError::UnknownMessage),
        Err(_) => error(&AppError::Store),
    }
}
