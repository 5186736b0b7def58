//! The shared application state handed to every handler.

use std::sync::Arc;

use keygate_storage::Store;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::recorder::Recorder;

/// The state every handler gets: one `Arc`, so the several clones per request (one per
/// extractor) are one atomic increment each, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// Config in an `Arc`, the store, the keyring, the recorder.
pub struct AppStateInner {
    pub config: Arc<Config>,
    pub store: Store,
    pub auth: Authenticator,
    pub keyring: Keyring,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// For user-chosen URLs (webhooks, OAuth token endpoints): public addresses only
    /// ([`crate::outbound`]).
    pub http: reqwest::Client,
    /// For the operator's own `KEYGATE_WEBHOOK_URLS`, which may be on a private network.
    pub operator_http: reqwest::Client,
    pub gateway: Arc<crate::gateway::Gateway>,
    /// HMAC key of the audit chain, derived from the master key.
    pub chain_key: Arc<[u8; 32]>,
    /// Master-derived keys for site keys and webhook secrets.
    pub platform: Arc<crate::platform::PlatformKeys>,
    /// Background job runner handle (wake-ups).
    pub jobs: crate::jobs::Jobs,
    /// The OpenBao Transit provider when it is the key provider (master-key rotation).
    pub kms: Option<Arc<keygate_keys::OpenBaoTransitProvider>>,
}
