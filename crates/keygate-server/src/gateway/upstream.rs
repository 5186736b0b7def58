//! The exchange's own rate limit per key, learned from response headers. When the last
//! answer says the window is used up (or the exchange answered 429/418 with a
//! `Retry-After`), keygate answers 429 itself until the window resets, instead of letting
//! the exchange ban the key or the IP: several bots sharing one key are the usual cause.
//! Where the exchange counts per source IP (Binance's request weight and its 418 bans),
//! the window belongs to the exchange host, and every key reached through it shares it.

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

#[derive(Debug, Default)]
struct Key {
    /// What is known of the current window.
    window: Option<Window>,
    /// Calls let through [`UpstreamLimits::check`] so far (never reset): an answer is
    /// read against the calls sent after its own.
    sent: u64,
}

/// Whose budget a window is: one key's, or (where the exchange counts per source IP) that
/// of every key keygate reaches the exchange host with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Key(Uuid),
    Host(String),
}

impl Scope {
    /// The scope of a call with `credential` to `host` of an exchange whose limits are
    /// per IP (`per_ip`) or per key.
    pub fn of(per_ip: bool, credential: Uuid, host: &str) -> Scope {
        if per_ip {
            Scope::Host(host.to_string())
        } else {
            Scope::Key(credential)
        }
    }
}

#[derive(Default)]
pub struct UpstreamLimits {
    by_scope: Mutex<HashMap<Scope, Key>>,
}

/// A call let through [`UpstreamLimits::check`]: its place among the key's calls, to
/// hand back to [`UpstreamLimits::observe`] with its answer.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// Without a reset time from the exchange, assume the common one-minute window.
const DEFAULT_WINDOW_MS: i64 = 60_000;

impl UpstreamLimits {
    /// Learns from the answer to the call holding `ticket`. The exchange counted that
    /// call and those before it, not the calls sent after it that are still on their way:
    /// those are taken off what the answer reports. So answers arriving out of order
    /// (several bots share a key) never give back budget that calls in flight will use,
    /// and a late one cannot lift the exchange's own block: it stands until it ends.
    pub fn observe(&self, scope: &Scope, rl: &RateLimitStatus, now: DateTime<Utc>, ticket: Ticket) {
        let Some(reported) = rl.left() else {
            return;
        };
        let now_ms = now.timestamp_millis();
        let reset_at_ms = rl
            .reset_at_ms
            .filter(|r| *r > now_ms)
            .unwrap_or_else(|| now_ms - now_ms.rem_euclid(DEFAULT_WINDOW_MS) + DEFAULT_WINDOW_MS);
        let mut map = self.by_scope.lock();
        let key = key_of(&mut map, scope);
        // the exchange's block stands; an answer about an earlier window (a call that
        // started before the current window began) tells nothing about this one
        if matches!(key.window, Some(w) if (w.blocked && w.reset_at_ms > now_ms) || reset_at_ms < w.reset_at_ms)
        {
            return;
        }
        let in_flight = key.sent.saturating_sub(ticket.0);
        key.window = Some(Window {
            remaining: reported.saturating_sub(in_flight),
            reset_at_ms,
            blocked: false,
        });
    }

    /// Learns from the exchange's answer (`status`, `headers`) to `credential`'s call
    /// holding `ticket`: the window its rate-limit headers report, and its own refusal
    /// for rate (429 / 418). Answers the headers' rate-limit state, for the call's record.
    #[allow(clippy::too_many_arguments)]
    pub fn learn(
        &self,
        api: &dyn keygate_exchanges::Exchange,
        scope: &Scope,
        credential: Uuid,
        status: u16,
        headers: &HeaderMap,
        now: DateTime<Utc>,
        ticket: Ticket,
    ) -> Option<RateLimitStatus> {
        let rl = api.rate_limit(headers);
        if let Some(rl) = &rl {
            self.observe(scope, rl, now, ticket);
        }
        if status == 429 || status == 418 {
            self.blocked_by_exchange(scope, credential, status, headers, now);
        }
        rl
    }

    /// The exchange itself refused `credential`'s call for rate (429 / 418): block until
    /// its `Retry-After`. Where limits are per source IP, an IP ban (418) or a refusal
    /// with a `Retry-After` (Binance's for request weight) blocks the host's scope; a 429
    /// without one is the account's own order-rate limit and blocks that key only, so one
    /// tenant's orders cannot stop everyone's calls.
    pub fn blocked_by_exchange(
        &self,
        scope: &Scope,
        credential: Uuid,
        status: u16,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) {
        let key_only = Scope::Key(credential);
        let scope = match scope {
            Scope::Host(_) if status != 418 && !headers.contains_key(http::header::RETRY_AFTER) => {
                &key_only
            }
            s => s,
        };
        let secs = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(60)
            .clamp(1, 3600);
        let until = now.timestamp_millis() + secs * 1000;
        let mut map = self.by_scope.lock();
        let key = key_of(&mut map, scope);
        // a late, shorter refusal does not cut short a longer block already in force
        let until = match key.window {
            Some(w) if w.blocked => until.max(w.reset_at_ms),
            _ => until,
        };
        key.window = Some(Window {
            remaining: 0,
            reset_at_ms: until,
            blocked: true,
        });
    }

    /// A denial when the window of `scope` (or, for a host's scope, an exchange block on
    /// `credential` itself) is known to be used up; else the call's [`Ticket`] (the call
    /// is counted against what is left).
    pub fn check(
        &self,
        scope: &Scope,
        credential: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Ticket, Denial> {
        let now_ms = now.timestamp_millis();
        let mut map = self.by_scope.lock();
        if matches!(scope, Scope::Host(_)) {
            if let Some(Window {
                blocked: true,
                reset_at_ms,
                ..
            }) = map.get(&Scope::Key(credential)).and_then(|k| k.window)
            {
                if reset_at_ms > now_ms {
                    return Err(refused(&Scope::Key(credential), reset_at_ms - now_ms));
                }
            }
        }
        let key = key_of(&mut map, scope);
        match key.window {
            Some(w) if w.reset_at_ms <= now_ms => key.window = None,
            Some(w) if w.remaining == 0 => return Err(refused(scope, w.reset_at_ms - now_ms)),
            Some(_) => {}
            None => {}
        }
        if let Some(w) = key.window.as_mut() {
            w.remaining -= 1;
        }
        key.sent += 1;
        Ok(Ticket(key.sent))
    }
}

/// `scope`'s entry, made on first use: the scope (for Binance, the host name) is copied
/// into the map only then, not on every call.
fn key_of<'m>(map: &'m mut HashMap<Scope, Key>, scope: &Scope) -> &'m mut Key {
    if !map.contains_key(scope) {
        map.insert(scope.clone(), Key::default());
    }
    map.get_mut(scope).expect("just inserted")
}

/// The answer to a call held because `scope`'s window is used up for `left_ms` more.
fn refused(scope: &Scope, left_ms: i64) -> Denial {
    let secs = ((left_ms + 999) / 1000).max(1) as u64;
    Denial {
        code: DenyCode::ExchangeRateLimited,
        detail: match scope {
            Scope::Key(_) => format!(
                "the exchange's rate limit for this key is used up; retry in {secs} s (keygate holds the call so the exchange does not ban the key)"
            ),
            Scope::Host(_) => format!(
                "the exchange's rate limit for keygate's address is used up; retry in {secs} s (keygate holds the call so the exchange does not ban the address, and with it every key)"
            ),
        },
        retry_after_secs: Some(secs),
        status: DenyCode::ExchangeRateLimited.status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The credential of the calls in these tests (their scope is a key's unless said).
    const K: Uuid = Uuid::from_u128(7);

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_790_000_000_000 + ms).unwrap()
    }

    #[test]
    fn used_up_window_denies_until_reset() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let first = u.check(c, K, t(0)).expect("nothing known: allowed");
        let rl = RateLimitStatus {
            used: Some(6000),
            limit: Some(6000),
            remaining: None,
            reset_at_ms: Some(t(30_000).timestamp_millis()),
        };
        u.observe(c, &rl, t(0), first);
        let d = u.check(c, K, t(1_000)).expect_err("used up");
        assert_eq!(d.code, DenyCode::ExchangeRateLimited);
        assert_eq!(d.status, 429);
        assert_eq!(d.retry_after_secs, Some(29));
        assert!(u.check(c, K, t(30_000)).is_ok(), "window reset");
        assert!(
            u.check(&Scope::Key(Uuid::new_v4()), K, t(1_000)).is_ok(),
            "other keys unaffected"
        );
    }

    #[test]
    fn remaining_budget_is_spent_locally() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let rl = RateLimitStatus {
            remaining: Some(2),
            reset_at_ms: Some(t(10_000).timestamp_millis()),
            ..Default::default()
        };
        let first = u.check(c, K, t(0)).unwrap();
        u.observe(c, &rl, t(0), first);
        assert!(u.check(c, K, t(1)).is_ok());
        assert!(u.check(c, K, t(2)).is_ok());
        assert!(
            u.check(c, K, t(3)).is_err(),
            "two calls spent what was left"
        );
    }

    #[test]
    fn exchange_429_blocks_for_retry_after() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "5".parse().unwrap());
        u.blocked_by_exchange(c, K, 429, &h, t(0));
        assert_eq!(
            u.check(c, K, t(1_000)).unwrap_err().retry_after_secs,
            Some(4)
        );
        assert!(u.check(c, K, t(5_000)).is_ok());
    }

    /// A call sent before the block but answered after it (its headers still show budget)
    /// does not lift the block.
    #[test]
    fn a_late_answer_does_not_lift_the_exchanges_block() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let before = u.check(c, K, t(-5)).unwrap();
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "5".parse().unwrap());
        u.blocked_by_exchange(c, K, 429, &h, t(0));
        let late = RateLimitStatus {
            remaining: Some(100),
            reset_at_ms: Some(t(60_000).timestamp_millis()),
            ..Default::default()
        };
        u.observe(c, &late, t(10), before);
        assert_eq!(
            u.check(c, K, t(1_000)).unwrap_err().retry_after_secs,
            Some(4)
        );
        assert!(u.check(c, K, t(5_000)).is_ok(), "the block ends on time");

        // a long ban, then a late 429 with a short Retry-After: the ban stands
        h.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
        u.blocked_by_exchange(c, K, 429, &h, t(10_000));
        h.insert(http::header::RETRY_AFTER, "1".parse().unwrap());
        u.blocked_by_exchange(c, K, 429, &h, t(9_000));
        assert!(u.check(c, K, t(60_000)).is_err(), "still banned");
    }

    /// The exchange's count is the truth once it answers: a key whose usage stays low is
    /// never refused, however many calls it makes (each call's local decrement is
    /// replaced by the next answer, not added to it).
    #[test]
    fn steady_answers_never_exhaust_the_budget() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let answer = RateLimitStatus {
            used: Some(1),
            limit: Some(10),
            remaining: None,
            reset_at_ms: Some(t(60_000).timestamp_millis()),
        };
        for i in 0..100 {
            let k = u
                .check(c, K, t(i))
                .unwrap_or_else(|_| panic!("call {i} refused"));
            u.observe(c, &answer, t(i), k);
        }
    }

    /// Answers read against the calls sent after them: two calls left, ten bots asking.
    /// Two go out; the first one's answer (the exchange had not seen the second yet)
    /// says one is left, which the second is already using. An answer about an earlier
    /// window, arriving late, changes nothing. Before, each answer replaced the count:
    /// the first let a third call out over the limit, the late one many more.
    #[test]
    fn out_of_order_and_late_answers_do_not_give_back_budget() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let at = |remaining: u64, reset: i64| RateLimitStatus {
            remaining: Some(remaining),
            reset_at_ms: Some(t(reset).timestamp_millis()),
            ..Default::default()
        };
        let early = u.check(c, K, t(0)).unwrap();
        u.observe(c, &at(2, 60_000), t(1), early);
        let one = u.check(c, K, t(2)).unwrap();
        let two = u.check(c, K, t(3)).unwrap();
        for i in 0..8 {
            assert!(u.check(c, K, t(4 + i)).is_err(), "bot {i} let through");
        }
        u.observe(c, &at(1, 60_000), t(20), one);
        assert!(
            u.check(c, K, t(21)).is_err(),
            "call two is already using the last one"
        );
        u.observe(c, &at(0, 60_000), t(22), two);
        // an answer about the window before this one, however much it says is left
        let stale = u.check(c, K, t(-30_000));
        assert!(stale.is_err());
        let before = Ticket(0);
        u.observe(c, &at(500, 30_000), t(23), before);
        assert!(
            u.check(c, K, t(24)).is_err(),
            "a late answer reopened the window"
        );
        assert!(u.check(c, K, t(60_000)).is_ok(), "the window ends on time");
    }

    /// Where limits are per source IP, an IP ban (418) holds every key sent to the host;
    /// a 429 without `Retry-After` (the account's own order rate) holds that key only.
    #[test]
    fn a_host_ban_holds_every_key_and_an_order_limit_only_its_own() {
        let u = UpstreamLimits::default();
        let host = &Scope::Host("api.binance.com".into());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let none = HeaderMap::new();
        u.blocked_by_exchange(host, a, 429, &none, t(0));
        assert!(
            u.check(host, a, t(1)).is_err(),
            "the key that hit its order limit"
        );
        assert!(u.check(host, b, t(1)).is_ok(), "another tenant's key");
        u.blocked_by_exchange(host, b, 418, &none, t(2));
        assert!(
            u.check(host, Uuid::new_v4(), t(3)).is_err(),
            "an IP ban holds everyone"
        );
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "5".parse().unwrap());
        let other = &Scope::Host("fapi.binance.com".into());
        u.blocked_by_exchange(other, a, 429, &h, t(0));
        assert!(
            u.check(other, b, t(1)).is_err(),
            "weight exceeded: the host's budget"
        );
    }
}
