//! The exchange's own rate limit per key, learned from response headers. When the last
//! answer says the window is used up (or the exchange answered 429/418 with a
//! `Retry-After`), keygate answers 429 itself until the window resets, instead of letting
//! the exchange ban the key or the IP: several bots sharing one key are the usual cause.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use keygate_exchanges::RateLimitStatus;
use keygate_policy::{Denial, DenyCode};
use parking_lot::Mutex;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
struct Window {
    remaining: u64,
    /// When the window resets (ms since the epoch).
    reset_at_ms: i64,
    /// Set by the exchange's own refusal (429 / 418): stands until `reset_at_ms`.
    blocked: bool,
}

#[derive(Default)]
pub struct UpstreamLimits {
    by_credential: Mutex<HashMap<Uuid, Window>>,
}

/// Without a reset time from the exchange, assume the common one-minute window.
const DEFAULT_WINDOW_MS: i64 = 60_000;

impl UpstreamLimits {
    /// Learns from a response's rate-limit headers. Answers arrive out of order (several
    /// bots share a key), so a late one cannot lift the exchange's own block: it stands
    /// until it ends. (Otherwise the latest answer wins. Taking the lowest count seen in a
    /// window would count each call twice, once by [`UpstreamLimits::check`]'s local
    /// decrement and once by the exchange, and refuse at half the budget.)
    pub fn observe(&self, credential: Uuid, rl: &RateLimitStatus, now: DateTime<Utc>) {
        let remaining = match (rl.remaining, rl.limit, rl.used) {
            (Some(r), _, _) => r,
            (None, Some(l), Some(u)) => l.saturating_sub(u),
            _ => return,
        };
        let now_ms = now.timestamp_millis();
        let reset_at_ms = rl
            .reset_at_ms
            .filter(|r| *r > now_ms)
            .unwrap_or_else(|| now_ms - now_ms.rem_euclid(DEFAULT_WINDOW_MS) + DEFAULT_WINDOW_MS);
        let mut map = self.by_credential.lock();
        match map.get_mut(&credential) {
            Some(w) if w.blocked && w.reset_at_ms > now_ms => {}
            _ => {
                map.insert(
                    credential,
                    Window {
                        remaining,
                        reset_at_ms,
                        blocked: false,
                    },
                );
            }
        }
    }

    /// The exchange itself refused for rate (429 / 418): block until its `Retry-After`.
    pub fn blocked_by_exchange(&self, credential: Uuid, headers: &HeaderMap, now: DateTime<Utc>) {
        let secs = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(60)
            .clamp(1, 3600);
        let until = now.timestamp_millis() + secs * 1000;
        let mut map = self.by_credential.lock();
        // a late, shorter refusal does not cut short a longer block already in force
        let until = match map.get(&credential) {
            Some(w) if w.blocked => until.max(w.reset_at_ms),
            _ => until,
        };
        map.insert(
            credential,
            Window {
                remaining: 0,
                reset_at_ms: until,
                blocked: true,
            },
        );
    }

    /// A denial when the key's window is known to be used up, else `None`.
    pub fn check(&self, credential: Uuid, now: DateTime<Utc>) -> Option<Denial> {
        let now_ms = now.timestamp_millis();
        let mut map = self.by_credential.lock();
        let w = *map.get(&credential)?;
        if w.reset_at_ms <= now_ms {
            map.remove(&credential);
            return None;
        }
        if w.remaining > 0 {
            if let Some(e) = map.get_mut(&credential) {
                // Count the call we are about to make against what is left.
                e.remaining -= 1;
            }
            return None;
        }
        let secs = ((w.reset_at_ms - now_ms + 999) / 1000).max(1) as u64;
        Some(Denial {
            code: DenyCode::ExchangeRateLimited,
            detail: format!(
                "the exchange's rate limit for this key is used up; retry in {secs} s (keygate holds the call so the exchange does not ban the key)"
            ),
            retry_after_secs: Some(secs),
            status: DenyCode::ExchangeRateLimited.status(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_790_000_000_000 + ms).unwrap()
    }

    #[test]
    fn used_up_window_denies_until_reset() {
        let u = UpstreamLimits::default();
        let c = Uuid::new_v4();
        assert!(u.check(c, t(0)).is_none(), "nothing known: allowed");
        let rl = RateLimitStatus {
            used: Some(6000),
            limit: Some(6000),
            remaining: None,
            reset_at_ms: Some(t(30_000).timestamp_millis()),
        };
        u.observe(c, &rl, t(0));
        let d = u.check(c, t(1_000)).expect("used up");
        assert_eq!(d.code, DenyCode::ExchangeRateLimited);
        assert_eq!(d.status, 429);
        assert_eq!(d.retry_after_secs, Some(29));
        assert!(u.check(c, t(30_000)).is_none(), "window reset");
        assert!(
            u.check(Uuid::new_v4(), t(1_000)).is_none(),
            "other keys unaffected"
        );
    }

    #[test]
    fn remaining_budget_is_spent_locally() {
        let u = UpstreamLimits::default();
        let c = Uuid::new_v4();
        let rl = RateLimitStatus {
            remaining: Some(2),
            reset_at_ms: Some(t(10_000).timestamp_millis()),
            ..Default::default()
        };
        u.observe(c, &rl, t(0));
        assert!(u.check(c, t(1)).is_none());
        assert!(u.check(c, t(2)).is_none());
        assert!(u.check(c, t(3)).is_some(), "two calls spent what was left");
    }

    #[test]
    fn exchange_429_blocks_for_retry_after() {
        let u = UpstreamLimits::default();
        let c = Uuid::new_v4();
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "5".parse().unwrap());
        u.blocked_by_exchange(c, &h, t(0));
        assert_eq!(u.check(c, t(1_000)).unwrap().retry_after_secs, Some(4));
        assert!(u.check(c, t(5_000)).is_none());
    }

    /// A call sent before the block but answered after it (its headers still show budget)
    /// does not lift the block.
    #[test]
    fn a_late_answer_does_not_lift_the_exchanges_block() {
        let u = UpstreamLimits::default();
        let c = Uuid::new_v4();
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "5".parse().unwrap());
        u.blocked_by_exchange(c, &h, t(0));
        let late = RateLimitStatus {
            remaining: Some(100),
            reset_at_ms: Some(t(60_000).timestamp_millis()),
            ..Default::default()
        };
        u.observe(c, &late, t(10));
        assert_eq!(u.check(c, t(1_000)).unwrap().retry_after_secs, Some(4));
        assert!(u.check(c, t(5_000)).is_none(), "the block ends on time");

        // a long ban, then a late 429 with a short Retry-After: the ban stands
        h.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
        u.blocked_by_exchange(c, &h, t(10_000));
        h.insert(http::header::RETRY_AFTER, "1".parse().unwrap());
        u.blocked_by_exchange(c, &h, t(9_000));
        assert!(u.check(c, t(60_000)).is_some(), "still banned");
    }

    /// The exchange's count is the truth once it answers: a key whose usage stays low is
    /// never refused, however many calls it makes (each call's local decrement is
    /// replaced by the next answer, not added to it).
    #[test]
    fn steady_answers_never_exhaust_the_budget() {
        let u = UpstreamLimits::default();
        let c = Uuid::new_v4();
        let answer = RateLimitStatus {
            used: Some(1),
            limit: Some(10),
            remaining: None,
            reset_at_ms: Some(t(60_000).timestamp_millis()),
        };
        for i in 0..100 {
            assert!(u.check(c, t(i)).is_none(), "call {i} refused");
            u.observe(c, &answer, t(i));
        }
    }
}
