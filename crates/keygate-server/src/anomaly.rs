//! Anomaly scoring of credential use (issue 8).
//!
//! [`score`] is pure: it takes [`Signals`] (facts already reduced to numbers) and returns a
//! risk score 0..=100 with stable snake_case reasons. [`assess`] is the entry point the
//! gateway calls on each credential use: it gathers the facts from `api_calls` /
//! `audit_events` in one transaction, scores them, and at or above
//! `KEYGATE_ANOMALY_SUSPEND_THRESHOLD` suspends the credential at once
//! ([`suspend_credential`]: status `suspended`, audit event, webhook).
//!
//! Signals and weights (sum clamped to 100):
//! | reason | when | points |
//! | --- | --- | --- |
//! | `new_source_ip` | the credential was used (history or recent window) but never from this IP | 30 |
//! | `unusual_hour` | the user has ≥ 50 calls of history and < 1 % of them in this UTC hour | 15 |
//! | `burst_above_baseline` | recent calls ≥ 30 and ≥ 10× the baseline for that window | 50 |
//! | `denial_streak` | ≥ 5 denied calls in a row, not counting refusals for a locked vault, a rate limit or unavailable counters (≥ 10: 40 points) | 25 / 40 |
//! | `withdrawal_attempt` | the call is a withdrawal | 40 |
//! | `unlock_from_new_ip` | a password unlock from an IP never used to unlock before, just now | 30 |
//! | `withdrawal_from_new_ip` | a withdrawal with `new_source_ip` or `unlock_from_new_ip` | 10 |
//! | `withdrawal_from_young_ip` | a withdrawal from an IP that is not new, but that the key, used more than a day ago, had not used until the last day | 40 |
//!
//! With the default threshold (80), a withdrawal from a new IP suspends the key by itself
//! (30 + 40 + 10), as does one right after an unlock from a new IP, and one from an IP
//! first used in the last day (40 + 40): a thief who makes a few calls first, until the
//! IP counts as known five minutes later, is caught too.

use chrono::{Duration, Timelike};
use keygate_storage::{Actor, DbTime, FactsQuery, Json};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::recorder::{event, RequestMeta};
use crate::state::AppState;

pub const NEW_SOURCE_IP: &str = "new_source_ip";
pub const UNUSUAL_HOUR: &str = "unusual_hour";
pub const BURST: &str = "burst_above_baseline";
pub const DENIAL_STREAK: &str = "denial_streak";
pub const WITHDRAWAL: &str = "withdrawal_attempt";
pub const UNLOCK_FROM_NEW_IP: &str = "unlock_from_new_ip";
pub const WITHDRAWAL_FROM_NEW_IP: &str = "withdrawal_from_new_ip";
pub const WITHDRAWAL_FROM_YOUNG_IP: &str = "withdrawal_from_young_ip";

/// Length of the "recent" window bursts are counted in.
pub const RECENT_WINDOW: Duration = Duration::minutes(5);
/// History that baselines, known IPs and usual hours come from.
pub const HISTORY: Duration = Duration::days(14);
/// An unlock this recent counts as "just before" the use.
pub const UNLOCK_WINDOW: Duration = Duration::minutes(15);
/// A withdrawal's source IP must have been used by the key at least this long ago.
pub const WITHDRAWAL_IP_AGE: Duration = Duration::days(1);

/// Facts reduced to what the scorer needs. Build it from storage with
/// [`Signals::from_facts`], or by hand in tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// Calls of this credential in the history window.
    pub history_calls: i64,
    /// Of the history calls, from the current source IP (0 with history → new IP).
    pub history_calls_from_ip: i64,
    /// The user's calls per UTC hour of day over the history window.
    pub hour_histogram: [i64; 24],
    /// UTC hour of the call being scored.
    pub hour: u32,
    /// Calls of this credential in the recent window.
    pub recent_calls: i64,
    /// Of those, from the current source IP (a credential without older history is "new
    /// IP" when none of its recent calls came from it).
    pub recent_calls_from_ip: i64,
    /// Average calls per recent-window-length over the history.
    pub baseline_per_window: f64,
    /// Denied calls in a row just before this one.
    pub denial_streak: i64,
    pub is_withdrawal: bool,
    /// A password unlock from a never-before-seen IP happened just before.
    pub unlock_from_new_ip: bool,
    /// The key was used before [`WITHDRAWAL_IP_AGE`] ago, never from this IP (asked for
    /// withdrawals only).
    pub ip_young: bool,
}

/// A score and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Score {
    /// 0..=100.
    pub score: u8,
    /// Stable snake_case reason codes, in the table's order.
    pub reasons: Vec<&'static str>,
}

/// The pure scorer (see the module table).
pub fn score(s: &Signals) -> Score {
    let mut total: u32 = 0;
    let mut reasons = Vec::new();
    let mut add = |points: u32, reason: &'static str| {
        total += points;
        reasons.push(reason);
    };
    // New to the credential: absent from its older history, or, for a credential whose
    // whole life is the recent window, absent from that.
    let new_ip = (s.history_calls > 0 && s.history_calls_from_ip == 0)
        || (s.history_calls == 0 && s.recent_calls > 0 && s.recent_calls_from_ip == 0);
    if new_ip {
        add(30, NEW_SOURCE_IP);
    }
    let hist_total: i64 = s.hour_histogram.iter().sum();
    if hist_total >= 50 {
        let this_hour = s.hour_histogram[(s.hour % 24) as usize];
        if (this_hour as f64) < hist_total as f64 * 0.01 {
            add(15, UNUSUAL_HOUR);
        }
    }
    if s.recent_calls >= 30 && s.recent_calls as f64 >= 10.0 * s.baseline_per_window {
        add(50, BURST);
    }
    if s.denial_streak >= 10 {
        add(40, DENIAL_STREAK);
    } else if s.denial_streak >= 5 {
        add(25, DENIAL_STREAK);
    }
    if s.is_withdrawal {
        add(40, WITHDRAWAL);
    }
    if s.unlock_from_new_ip {
        add(30, UNLOCK_FROM_NEW_IP);
    }
    // Moving funds out from somewhere new is what a stolen key is used for: the pair
    // alone reaches the default threshold.
    if s.is_withdrawal && (new_ip || s.unlock_from_new_ip) {
        add(10, WITHDRAWAL_FROM_NEW_IP);
    } else if s.is_withdrawal && s.ip_young {
        // the IP became "known" within the last day: a few calls first are no cover
        add(40, WITHDRAWAL_FROM_YOUNG_IP);
    }
    Score {
        score: total.min(100) as u8,
        reasons,
    }
}

impl Signals {
    /// Reduces stored facts to signals for a call at `now`.
    pub fn from_facts(f: &keygate_storage::AnomalyFacts, now: DbTime, is_withdrawal: bool) -> Self {
        let windows = (HISTORY.num_seconds() / RECENT_WINDOW.num_seconds()).max(1) as f64;
        Signals {
            history_calls: f.history_calls,
            history_calls_from_ip: f.history_calls_from_ip,
            hour_histogram: f.hour_histogram,
            hour: now.0.hour(),
            recent_calls: f.recent_calls,
            recent_calls_from_ip: f.recent_calls_from_ip,
            baseline_per_window: f.history_calls as f64 / windows,
            denial_streak: f.denial_streak,
            is_withdrawal,
            unlock_from_new_ip: f.recent_unlock_ip.is_some()
                && f.earlier_unlocks > 0
                && f.earlier_unlocks_from_ip == 0,
            ip_young: is_withdrawal && f.ip_used_before == Some(false),
        }
    }
}

/// What the gateway knows about the call being assessed.
#[derive(Debug, Clone, Default)]
pub struct AssessInput {
    /// Source IP of the call.
    pub ip: Option<String>,
    pub is_withdrawal: bool,
    /// When the call happens (injected for tests; `None` = now).
    pub now: Option<DbTime>,
}

/// The result of [`assess`]: store `score` and `reasons` on the call's audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub score: u8,
    pub reasons: Vec<&'static str>,
    /// True when the score reached the threshold: the credential is suspended, by this
    /// assessment or by a concurrent one that got there first, and the call must not go
    /// ahead. (Only the assessment that suspended it writes the audit event and sends the
    /// webhook.)
    pub suspended: bool,
}

/// Scores one use of `credential_id` by its owner `user_id` and suspends the credential
/// when the score reaches the configured threshold (0 disables suspension). Fail closed:
/// a storage error is returned, not scored as 0.
pub async fn assess(
    state: &AppState,
    user_id: Uuid,
    credential_id: Uuid,
    input: AssessInput,
) -> Result<Assessment, ApiError> {
    let now = input.now.unwrap_or_else(DbTime::now);
    let q = FactsQuery {
        user_id,
        credential_id,
        ip: input.ip.clone(),
        recent_since: DbTime::new(now.0 - RECENT_WINDOW),
        history_since: DbTime::new(now.0 - HISTORY),
        unlock_since: DbTime::new(now.0 - UNLOCK_WINDOW),
        now,
        ip_settled_before: input
            .is_withdrawal
            .then(|| DbTime::new(now.0 - WITHDRAWAL_IP_AGE)),
    };
    let facts = state.store.anomaly_facts(Actor::service(), &q).await?;
    let s = score(&Signals::from_facts(&facts, now, input.is_withdrawal));
    let threshold = state.config.anomaly_suspend_threshold;
    // Every call that scores at the threshold is stopped, not only the one whose UPDATE
    // changed the row: concurrent calls (parallel withdrawals from a new IP) all read the
    // credential as active before the first suspension commits.
    let suspended = threshold > 0 && s.score >= threshold;
    if suspended {
        suspend_credential(
            state,
            user_id,
            credential_id,
            &format!("anomaly score {} ({})", s.score, s.reasons.join(", ")),
            s.score,
            &s.reasons,
        )
        .await?;
    }
    Ok(Assessment {
        score: s.score,
        reasons: s.reasons,
        suspended,
    })
}

/// Suspends a credential (platform action): status `suspended` with `reason`, an audit
/// event carrying the score and reasons, and a `credential.suspended` webhook to the owner's
/// and the platform's endpoints. Returns false if it was not active.
pub async fn suspend_credential(
    state: &AppState,
    user_id: Uuid,
    credential_id: Uuid,
    reason: &str,
    risk_score: u8,
    reasons: &[&'static str],
) -> Result<bool, ApiError> {
    let now = DbTime::now();
    let done = state
        .store
        .suspend_credential(Actor::service(), user_id, credential_id, reason, now)
        .await?;
    if !done {
        return Ok(false);
    }
    let system = Caller::system();
    let mut ev = event(
        "credential",
        "suspend",
        &system,
        Some(user_id),
        &RequestMeta::default(),
    );
    ev.credential_id = Some(credential_id);
    ev.reason = Some(reason.to_string());
    ev.risk_score = risk_score as i32;
    ev.risk_reasons = Json(reasons.iter().map(|r| r.to_string()).collect());
    state.recorder.record(vec![ev], vec![]).await?;
    crate::webhooks::emit(
        state,
        Some(user_id),
        "credential.suspended",
        serde_json::json!({
            "credential_id": credential_id,
            "reason": reason,
            "risk_score": risk_score,
            "risk_reasons": reasons,
        }),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> Signals {
        let mut h = [0i64; 24];
        h[10] = 100;
        Signals {
            history_calls: 100,
            history_calls_from_ip: 100,
            hour_histogram: h,
            hour: 10,
            recent_calls: 1,
            baseline_per_window: 0.5,
            ..Default::default()
        }
    }

    #[test]
    fn usual_use_scores_zero() {
        assert_eq!(
            score(&quiet()),
            Score {
                score: 0,
                reasons: vec![]
            }
        );
        // A brand-new credential has no history: nothing is "new" about its first IP.
        assert_eq!(score(&Signals::default()).score, 0);
    }

    #[test]
    fn new_source_ip() {
        let s = Signals {
            history_calls_from_ip: 0,
            ..quiet()
        };
        assert_eq!(score(&s).reasons, vec![NEW_SOURCE_IP]);
        assert_eq!(score(&s).score, 30);
        // A credential used only in the recent window: new when none of those calls came
        // from this IP, not new when some did, nothing to compare with when unused.
        let young = |recent_from_ip| Signals {
            history_calls: 0,
            history_calls_from_ip: 0,
            recent_calls: 3,
            recent_calls_from_ip: recent_from_ip,
            ..quiet()
        };
        assert_eq!(score(&young(0)).reasons, vec![NEW_SOURCE_IP]);
        assert!(score(&young(2)).reasons.is_empty());
        let unused = Signals {
            history_calls: 0,
            recent_calls: 0,
            ..quiet()
        };
        assert!(!score(&unused).reasons.contains(&NEW_SOURCE_IP));
    }

    #[test]
    fn unusual_hour() {
        let s = Signals { hour: 3, ..quiet() };
        assert_eq!(score(&s).reasons, vec![UNUSUAL_HOUR]);
        // too little history to know what is usual
        let mut h = [0i64; 24];
        h[10] = 10;
        let s = Signals {
            hour: 3,
            hour_histogram: h,
            ..quiet()
        };
        assert_eq!(score(&s).score, 0);
    }

    #[test]
    fn burst_above_baseline() {
        let s = Signals {
            recent_calls: 40,
            ..quiet()
        };
        assert_eq!(score(&s).reasons, vec![BURST]);
        assert_eq!(score(&s).score, 50);
        // a busy baseline makes 40 calls normal
        let s = Signals {
            recent_calls: 40,
            baseline_per_window: 20.0,
            ..quiet()
        };
        assert_eq!(score(&s).score, 0);
        // below the absolute floor
        let s = Signals {
            recent_calls: 29,
            baseline_per_window: 0.0,
            ..quiet()
        };
        assert_eq!(score(&s).score, 0);
    }

    #[test]
    fn denial_streak() {
        let s = |n| Signals {
            denial_streak: n,
            ..quiet()
        };
        assert_eq!(score(&s(4)).score, 0);
        assert_eq!(score(&s(5)).score, 25);
        assert_eq!(score(&s(12)).score, 40);
        assert_eq!(score(&s(12)).reasons, vec![DENIAL_STREAK]);
    }

    #[test]
    fn withdrawal_attempt() {
        let s = Signals {
            is_withdrawal: true,
            ..quiet()
        };
        assert_eq!(score(&s).reasons, vec![WITHDRAWAL]);
        assert_eq!(score(&s).score, 40);
    }

    #[test]
    fn unlock_from_new_ip() {
        let s = Signals {
            unlock_from_new_ip: true,
            ..quiet()
        };
        assert_eq!(score(&s).reasons, vec![UNLOCK_FROM_NEW_IP]);
    }

    #[test]
    fn signals_add_up_and_clamp() {
        let s = Signals {
            history_calls_from_ip: 0,
            recent_calls: 100,
            ..quiet()
        };
        assert_eq!(score(&s).score, 80);
        assert_eq!(score(&s).reasons, vec![NEW_SOURCE_IP, BURST]);
        let all = Signals {
            history_calls_from_ip: 0,
            hour: 3,
            recent_calls: 100,
            denial_streak: 20,
            is_withdrawal: true,
            unlock_from_new_ip: true,
            ..quiet()
        };
        assert_eq!(score(&all).score, 100);
        assert_eq!(score(&all).reasons.len(), 7);
    }

    /// A withdrawal from a new IP, or right after an unlock from one, reaches the default
    /// threshold by itself; neither half does.
    #[test]
    fn withdrawal_from_new_ip() {
        let threshold = crate::config::DEFAULT_ANOMALY_SUSPEND_THRESHOLD;
        let from_new_ip = Signals {
            history_calls_from_ip: 0,
            is_withdrawal: true,
            ..quiet()
        };
        assert_eq!(
            score(&from_new_ip).reasons,
            vec![NEW_SOURCE_IP, WITHDRAWAL, WITHDRAWAL_FROM_NEW_IP]
        );
        assert!(score(&from_new_ip).score >= threshold);
        let after_unlock = Signals {
            unlock_from_new_ip: true,
            is_withdrawal: true,
            ..quiet()
        };
        assert_eq!(
            score(&after_unlock).reasons,
            vec![WITHDRAWAL, UNLOCK_FROM_NEW_IP, WITHDRAWAL_FROM_NEW_IP]
        );
        assert!(score(&after_unlock).score >= threshold);
        // each half alone stays under it, and a new IP reading does not add the pair's
        let new_ip_only = Signals {
            history_calls_from_ip: 0,
            ..quiet()
        };
        assert!(score(&new_ip_only).score < threshold);
        assert!(!score(&new_ip_only)
            .reasons
            .contains(&WITHDRAWAL_FROM_NEW_IP));
        let withdrawal_only = Signals {
            is_withdrawal: true,
            ..quiet()
        };
        assert!(score(&withdrawal_only).score < threshold);
        // an IP first used in the last day, by a key used before that: a few calls made
        // first (the IP is then known) do not hide the withdrawal
        let young = Signals {
            is_withdrawal: true,
            ip_young: true,
            ..quiet()
        };
        assert_eq!(
            score(&young).reasons,
            vec![WITHDRAWAL, WITHDRAWAL_FROM_YOUNG_IP]
        );
        assert!(score(&young).score >= threshold);
        // counted once with a new IP (which is young too), and not without a withdrawal
        let young_and_new = Signals {
            history_calls_from_ip: 0,
            ..young.clone()
        };
        assert_eq!(score(&young_and_new).score, 80);
        assert!(!score(&young_and_new)
            .reasons
            .contains(&WITHDRAWAL_FROM_YOUNG_IP));
        let young_read = Signals {
            is_withdrawal: false,
            ..young
        };
        assert_eq!(score(&young_read).score, 0);
    }

    #[test]
    fn facts_reduce_to_signals() {
        let f = keygate_storage::AnomalyFacts {
            history_calls: 4032,
            recent_unlock_ip: Some("10.0.0.9".into()),
            earlier_unlocks: 3,
            earlier_unlocks_from_ip: 0,
            ..Default::default()
        };
        let s = Signals::from_facts(&f, DbTime::from_micros(0), false);
        assert!((s.baseline_per_window - 1.0).abs() < 1e-9);
        assert!(s.unlock_from_new_ip);
        assert_eq!(s.hour, 0);
        // the first unlock ever is not "from a new IP"
        let f = keygate_storage::AnomalyFacts {
            earlier_unlocks: 0,
            ..f
        };
        assert!(!Signals::from_facts(&f, DbTime::from_micros(0), false).unlock_from_new_ip);
    }
}
