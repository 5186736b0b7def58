//! Facts the server gathers before a decision: key and vault state, spent counters and
//! reference prices. Policy reads them; it never fetches or updates them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::symbol::{is_usd_like, normalize_asset, normalize_symbol};

/// Lifecycle state of the credential version that would sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    /// An old version during rotation: signs only until `grace_period_ends_at`.
    Rotating,
    Revoked,
    Expired,
    Suspended,
    /// Generated inside keygate, waiting for the exchange's key id (DESIGN.md §7).
    Pending,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub status: KeyStatus,
    pub expires_at: Option<DateTime<Utc>>,
    /// For a `Rotating` version: the instant it stops signing. Required for `Rotating`.
    pub grace_period_ends_at: Option<DateTime<Utc>>,
}

impl KeyState {
    /// An active key without expiry.
    pub fn active() -> Self {
        KeyState {
            status: KeyStatus::Active,
            expires_at: None,
            grace_period_ends_at: None,
        }
    }
}

/// Whether the owner's vault can be used for signing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaultState {
    /// Platform protection: the server can always decrypt.
    NotPasswordProtected,
    /// Password protected, inside an unlock session.
    Unlocked,
    /// Password protected, no unlock session: nothing can be signed.
    Locked,
}

/// Spend caps set on *other* connections of the same key. Those caps count this call too
/// (the ledger is per key), so its amounts must be known even where this connection's own
/// limits set no cap: an order of unknown notional, or a withdrawal without a USD price,
/// would otherwise count 0 there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsElsewhere {
    /// Another connection caps daily volume (`max_daily_volume_usd`).
    pub volume: bool,
    /// Another connection caps withdrawals (per day or per month).
    pub withdrawals: bool,
}

/// A connection's own request caps, with the calls made through that connection alone
/// (the request caps in [`crate::Limits`] count every call of the key, through any of its
/// connections). Counts are for the calendar windows that contain `now`, without the
/// request being evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionRates {
    pub max_per_minute: Option<u32>,
    pub max_per_hour: Option<u32>,
    pub max_per_day: Option<u32>,
    pub this_minute: u32,
    pub this_hour: u32,
    pub today: u32,
}

impl ConnectionRates {
    /// The request caps of a connection's own limits (counts zero).
    pub fn caps_of(limits: &crate::Limits) -> ConnectionRates {
        ConnectionRates {
            max_per_minute: limits.max_requests_per_minute,
            max_per_hour: limits.max_requests_per_hour,
            max_per_day: limits.max_requests_per_day,
            ..ConnectionRates::default()
        }
    }

    /// Whether any request cap is set.
    pub fn capped(&self) -> bool {
        self.max_per_minute.is_some() || self.max_per_hour.is_some() || self.max_per_day.is_some()
    }

    /// Whether counts that *include* a request (minute, hour, day) pass any cap: that
    /// request is refused.
    pub fn exceeded_by(&self, counts: [u32; 3]) -> bool {
        [self.max_per_minute, self.max_per_hour, self.max_per_day]
            .into_iter()
            .zip(counts)
            .any(|(cap, n)| cap.is_some_and(|cap| n > cap))
    }
}

/// What is already spent, from persisted rows and shared counters (DESIGN.md §7
/// "Counters that must not reset"). Request counts are for the *calendar* windows that
/// contain `now` (UTC minute, hour and day), without the request being evaluated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub requests_this_minute: u32,
    pub requests_this_hour: u32,
    pub requests_today: u32,
    /// Traded notional since 00:00 UTC, USD.
    pub daily_volume_usd: Decimal,
    /// Withdrawn since 00:00 UTC, USD.
    pub withdrawals_today_usd: Decimal,
    /// Withdrawn since the first of the month 00:00 UTC, USD.
    pub withdrawals_this_month_usd: Decimal,
    /// Net position per symbol in base-asset units (long positive, short negative), keyed
    /// by exchange symbol in any notation ([`normalize_symbol`] is applied). A symbol
    /// missing here is flat.
    pub net_positions: BTreeMap<String, Decimal>,
    /// Equity drop since 00:00 UTC in USD (a gain is negative or zero). `None` = no balance
    /// snapshot to compare with: orders are denied while `max_daily_loss_usd` is set.
    pub daily_loss_usd: Option<Decimal>,
}

impl Counters {
    /// Net position of `symbol` (any notation); flat when not tracked.
    pub fn net_position(&self, symbol: &str) -> Decimal {
        let want = normalize_symbol(symbol);
        self.net_positions
            .iter()
            .filter(|(k, _)| normalize_symbol(k) == want)
            .map(|(_, v)| *v)
            .next()
            .unwrap_or(Decimal::ZERO)
    }
}

/// Reference prices the operator configures or keygate caches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prices {
    /// USD price of one unit of an asset (`BTC` -> 65000). USD stablecoins are always 1
    /// whatever this map says.
    pub usd: BTreeMap<String, Decimal>,
    /// Base-asset units per contract, per symbol (any notation), from the exchange's
    /// instrument metadata. Inverse contracts must be converted by the caller. A symbol
    /// missing here has an unknown contract value.
    pub contract_values: BTreeMap<String, Decimal>,
}

impl Prices {
    /// USD value of one unit of `asset`; `None` when unknown or not positive.
    pub fn usd_price(&self, asset: &str) -> Option<Decimal> {
        if is_usd_like(asset) {
            return Some(Decimal::ONE);
        }
        let want = normalize_asset(asset);
        self.usd
            .iter()
            .find(|(k, _)| normalize_asset(k) == want)
            .map(|(_, v)| *v)
            .filter(|v| *v > Decimal::ZERO)
    }

    /// Contract value of `symbol`; `None` when unknown or not positive.
    pub fn contract_value(&self, symbol: &str) -> Option<Decimal> {
        let want = normalize_symbol(symbol);
        self.contract_values
            .iter()
            .find(|(k, _)| normalize_symbol(k) == want)
            .map(|(_, v)| *v)
            .filter(|v| *v > Decimal::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stablecoins_are_one_whatever_the_map_says() {
        let mut p = Prices::default();
        p.usd.insert("USDT".into(), Decimal::TWO);
        p.usd.insert("btc".into(), Decimal::ONE_HUNDRED);
        p.usd.insert("BAD".into(), Decimal::NEGATIVE_ONE);
        assert_eq!(p.usd_price("usdt"), Some(Decimal::ONE));
        assert_eq!(p.usd_price("BTC"), Some(Decimal::ONE_HUNDRED));
        assert_eq!(p.usd_price("BAD"), None);
        assert_eq!(p.usd_price("EUR"), None);
    }

    #[test]
    fn a_connection_cap_is_exceeded_by_counts_past_it() {
        let r = ConnectionRates {
            max_per_minute: Some(2),
            max_per_day: Some(10),
            ..ConnectionRates::default()
        };
        assert!(r.capped());
        assert!(!r.exceeded_by([2, 99, 10]));
        assert!(r.exceeded_by([3, 0, 0]));
        assert!(r.exceeded_by([1, 0, 11]));
        assert!(!ConnectionRates::default().exceeded_by([u32::MAX; 3]));
    }

    #[test]
    fn lookups_normalise_symbols() {
        let mut c = Counters::default();
        c.net_positions.insert("BTC/USDT:USDT".into(), Decimal::TWO);
        assert_eq!(c.net_position("BTCUSDT"), Decimal::TWO);
        assert_eq!(c.net_position("ETHUSDT"), Decimal::ZERO);
        let mut p = Prices::default();
        p.contract_values
            .insert("btc-usdt-swap".into(), Decimal::new(1, 2));
        assert_eq!(p.contract_value("BTC-USDT-SWAP"), Some(Decimal::new(1, 2)));
        assert_eq!(p.contract_value("ETH-USDT-SWAP"), None);
    }
}
