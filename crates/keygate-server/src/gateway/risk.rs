//! When the gateway runs anomaly scoring ([`crate::anomaly::assess`]) on a credential use.
//!
//! Scoring queries the call history, so it does not run on every call of a busy key: it
//! runs when the source IP is new to this instance for the credential, for every
//! withdrawal, after a denial (at most once a second), and otherwise at most every
//! [`REASSESS_EVERY`] per credential, which is enough to catch a burst. Calls in between
//! carry the credential's last score on their audit event. A score at the threshold
//! suspends the credential at once; the call that triggered it is denied too.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

pub const REASSESS_EVERY: Duration = Duration::from_secs(5);
const MAX_IPS: usize = 256;

#[derive(Default)]
struct State {
    ips: HashSet<String>,
    last: Option<Instant>,
    last_denial: Option<Instant>,
    score: u8,
    reasons: Vec<String>,
}

#[derive(Default)]
pub struct RiskCache {
    by_credential: Mutex<HashMap<Uuid, State>>,
}

/// The score a call's audit event carries.
#[derive(Debug, Clone, Default)]
pub struct Risk {
    pub score: u8,
    pub reasons: Vec<String>,
    pub suspended: bool,
}

impl RiskCache {
    /// Whether this call needs a fresh assessment (and marks it as taken).
    pub fn due(&self, credential: Uuid, ip: Option<&str>, withdrawal: bool, denied: bool) -> bool {
        let mut map = self.by_credential.lock();
        let st = map.entry(credential).or_default();
        let now = Instant::now();
        let new_ip = match ip {
            Some(ip) if !st.ips.contains(ip) => {
                if st.ips.len() >= MAX_IPS {
                    st.ips.clear();
                }
                st.ips.insert(ip.to_string());
                true
            }
            _ => false,
        };
        let stale = st
            .last
            .is_none_or(|t| now.duration_since(t) >= REASSESS_EVERY);
        let denial_due = denied
            && st
                .last_denial
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if denied {
            st.last_denial = Some(now);
        }
        let due = new_ip || withdrawal || stale || denial_due;
        if due {
            st.last = Some(now);
        }
        due
    }

    pub fn store(&self, credential: Uuid, risk: &Risk) {
        if let Some(st) = self.by_credential.lock().get_mut(&credential) {
            st.score = risk.score;
            st.reasons = risk.reasons.clone();
        }
    }

    pub fn last(&self, credential: Uuid) -> Risk {
        self.by_credential
            .lock()
            .get(&credential)
            .map(|st| Risk {
                score: st.score,
                reasons: st.reasons.clone(),
                suspended: false,
            })
            .unwrap_or_default()
    }
}
