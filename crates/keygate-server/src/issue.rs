//! What the operator's command line hands out, recorded in the audit chain before it is
//! shown: `keygate token` and `keygate login-link`. Either can act for any user (or, with
//! `--role service_role` or `--admin`, for every user), so the chain keeps who was given
//! what and until when. A token's event carries the token's own `session_id`, which every
//! event of a call made with that token carries too: an auditor can follow a minted token
//! from its issue to each use. The token and the link are never part of the event.

use keygate_storage::Json;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::recorder::{event, RequestMeta};
use crate::state::AppState;

/// What was handed out.
pub enum Issued<'a> {
    /// A bearer token (`keygate token`).
    Token {
        user: Option<Uuid>,
        role: &'a str,
        admin: bool,
        session_id: Uuid,
        ttl: std::time::Duration,
    },
    /// A one-time console sign-in link (`keygate login-link`).
    LoginLink {
        user: Uuid,
        admin: bool,
        ttl: std::time::Duration,
    },
}

/// Appends the event of `what` and waits for its commit: on an error nothing may be shown.
pub async fn record(state: &AppState, what: Issued<'_>) -> Result<(), ApiError> {
    let meta = RequestMeta {
        user_agent: Some("keygate-cli".into()),
        ..Default::default()
    };
    let (action, user, session, admin, ttl, mut metadata) = match what {
        Issued::Token {
            user,
            role,
            admin,
            session_id,
            ttl,
        } => (
            "token_issued",
            user,
            Some(session_id),
            admin || role == "service_role",
            ttl,
            serde_json::json!({"role": role, "admin": admin}),
        ),
        Issued::LoginLink { user, admin, ttl } => (
            "login_link_issued",
            Some(user),
            None,
            admin,
            ttl,
            serde_json::json!({"admin": admin}),
        ),
    };
    let expires = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
        .ok_or_else(|| ApiError::bad_request("invalid_ttl", "ttl out of range"))?;
    metadata["source"] = "cli".into();
    metadata["ttl_seconds"] = ttl.as_secs().into();
    metadata["expires_at"] = expires.to_rfc3339().into();
    let mut ev = event("auth", action, &Caller::system(), user, &meta);
    ev.session_id = session;
    ev.reason = Some(format!(
        "keygate {} (command line)",
        action.replace('_', " ")
    ));
    if admin {
        ev.risk_score = 20;
        ev.risk_reasons = Json(vec!["acts for every user".into()]);
    }
    ev.metadata = Json(metadata);
    state.recorder.record(vec![ev], vec![]).await
}
