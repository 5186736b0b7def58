//! Crypto-shredding from the command line (`keygate shred --user <uuid>`): the same
//! storage step as the API routes in `routes/vault.rs` (every DEK version destroyed, unlock
//! sessions dropped, credentials marked `shredded`), recorded in the audit chain as a
//! service action from the command line. Metadata and audit remain.

use keygate_storage::{Actor, DbTime, Json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::recorder::{event, RequestMeta};
use crate::state::AppState;

/// Destroys every data key of `user`; returns how many key versions were destroyed (0 when
/// the user has none or was already shredded, in which case nothing is recorded).
pub async fn shred_user(state: &AppState, user: Uuid) -> Result<u64, ApiError> {
    let operator = Caller::system();
    let meta = RequestMeta {
        user_agent: Some("keygate-cli".into()),
        ..Default::default()
    };
    // the shred and its audit event commit together
    let audit = |n: u64| {
        if n == 0 {
            return vec![];
        }
        let mut ev = event("vault", "shred", &operator, Some(user), &meta);
        ev.risk_score = 80;
        ev.risk_reasons = Json(vec!["all secrets of the user destroyed".into()]);
        ev.reason = Some("keygate shred (command line)".into());
        ev.metadata = Json(serde_json::json!({"source": "cli", "key_versions_destroyed": n}));
        vec![ev]
    };
    let shred = state
        .store
        .shred_user_keys(
            Actor::service(),
            user,
            DbTime::now(),
            audit,
            state.chain_key.as_ref(),
        )
        .await;
    state.keyring.evict(user);
    Ok(shred?)
}
