//! When the gateway runs anomaly scoring ([`crate::anomaly::assess`]) on a credential use.
//!
//! Scoring queries the call history, so it does not run on every call of a busy key. It
//! runs *on the call* (the call waits for the score) when the source IP is new to this
//! instance for the credential, for every withdrawal, and after a denial (at most once a
//! second): a score at the threshold suspends the credential at once and the call that
//! triggered it is denied too. Otherwise it runs *in the background* at most every
//! [`REASSESS_EVERY`] per credential, one at a time, which is enough to catch a burst: a
//! suspension it makes bumps the store's write epoch, so the next call reloads the
//! credential and is denied. The call that started it does not wait for a scan of the
//! key's history (hundreds of milliseconds on a busy key). Calls in between carry the
//! credential's last score on their audit event.

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
    /// A background assessment is running.
    running: bool,
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

/// Whether, and how, a call's use is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Carry the last score.
    No,
    /// Score now; the call waits (new IP, withdrawal, denial).
    Inline,
    /// Score in the background (periodic refresh); the call carries the last score.
    Background,
}

impl RiskCache {
    /// Whether this call needs a fresh assessment (and marks it as taken). A
    /// [`Due::Background`] answer must be followed by [`RiskCache::finished`].
    pub fn due(&self, credential: Uuid, ip: Option<&str>, withdrawal: bool, denied: bool) -> Due {
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
        if new_ip || withdrawal || denial_due {
            st.last = Some(now);
            Due::Inline
        } else if stale && !st.running {
            st.last = Some(now);
            st.running = true;
            Due::Background
        } else {
            Due::No
        }
    }

    /// An inline assessment failed (the call was refused): `ip` is not known yet, so the
    /// next call from it is scored on the call again, not waved through as seen.
    pub fn failed_inline(&self, credential: Uuid, ip: Option<&str>) {
        if let (Some(st), Some(ip)) = (self.by_credential.lock().get_mut(&credential), ip) {
            st.ips.remove(ip);
        }
    }

    /// A background assessment ended (with a score, or without one on error).
    pub fn finished(&self, credential: Uuid, risk: Option<&Risk>) {
        if let Some(st) = self.by_credential.lock().get_mut(&credential) {
            st.running = false;
            if let Some(r) = risk {
                st.score = r.score;
                st.reasons = r.reasons.clone();
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_score_inline_and_refreshes_go_to_the_background_one_at_a_time() {
        let cache = RiskCache::default();
        let cred = Uuid::new_v4();
        // first sight of an IP, a withdrawal, a denial: the call waits for the score
        assert_eq!(cache.due(cred, Some("10.0.0.1"), false, false), Due::Inline);
        assert_eq!(cache.due(cred, Some("10.0.0.1"), false, false), Due::No);
        assert_eq!(cache.due(cred, Some("10.0.0.1"), true, false), Due::Inline);
        assert_eq!(cache.due(cred, Some("10.0.0.2"), false, false), Due::Inline);
        // an inline score that failed leaves the IP new
        assert_eq!(cache.due(cred, Some("10.0.0.9"), false, false), Due::Inline);
        cache.failed_inline(cred, Some("10.0.0.9"));
        assert_eq!(cache.due(cred, Some("10.0.0.9"), false, false), Due::Inline);
        assert_eq!(cache.due(cred, Some("10.0.0.1"), false, true), Due::Inline);
        // within a second, a second denial carries the last score
        assert_eq!(cache.due(cred, Some("10.0.0.1"), false, true), Due::No);
        // a stale score is refreshed in the background, and only one refresh runs
        cache.by_credential.lock().get_mut(&cred).unwrap().last =
            Some(Instant::now() - REASSESS_EVERY);
        assert_eq!(
            cache.due(cred, Some("10.0.0.1"), false, false),
            Due::Background
        );
        cache.by_credential.lock().get_mut(&cred).unwrap().last =
            Some(Instant::now() - REASSESS_EVERY);
        assert_eq!(cache.due(cred, Some("10.0.0.1"), false, false), Due::No);
        let scored = Risk {
            score: 40,
            reasons: vec!["burst_above_baseline".into()],
            suspended: false,
        };
        cache.finished(cred, Some(&scored));
        let last = cache.last(cred);
        assert_eq!((last.score, last.reasons), (40, scored.reasons));
        // the finished refresh lets the next stale call start another
        assert_eq!(
            cache.due(cred, Some("10.0.0.1"), false, false),
            Due::Background
        );
        // a failed refresh keeps the last score
        cache.finished(cred, None);
        assert_eq!(cache.last(cred).score, 40);
    }
}
