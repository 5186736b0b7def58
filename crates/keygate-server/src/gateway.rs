//! The gateway: `ANY /v1/connections/{id}/proxy/{*path}`. (Being built; see issue 7.)

use axum::Router;

use crate::config::Config;
use crate::state::AppState;

/// Gateway-wide state: upstream rate-limit tracking and in-process counters.
pub struct Gateway {}

impl Gateway {
    pub fn new(_config: &Config) -> Self {
        Gateway {}
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
}
