//! Limits stored per credential and per connection (DESIGN.md §3, §7 "Limits the seed
//! stores"). One struct serves both; the effective limits of a call are
//! [`Limits::merge_stricter`] of the two.

use ipnet::IpNet;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::destination::AllowedDestination;
use crate::symbol::normalize_symbol;

/// Limits; every field optional, absent = not limited. JSON amounts are written as strings
/// and read from strings or numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_requests_per_minute: Option<u32>,
    pub max_requests_per_hour: Option<u32>,
    pub max_requests_per_day: Option<u32>,
    /// Maximum notional of one order, USD.
    pub max_trade_usd: Option<Decimal>,
    /// Maximum traded notional since 00:00 UTC, USD.
    pub max_daily_volume_usd: Option<Decimal>,
    pub max_withdrawal_usd_per_tx: Option<Decimal>,
    pub max_withdrawal_usd_per_day: Option<Decimal>,
    pub max_withdrawal_usd_per_month: Option<Decimal>,
    /// When set, withdrawals go only to these destinations (an empty list allows none).
    /// A destination with a memo / tag is written `address#tag`, and matches only that
    /// tag; a bare address matches only withdrawals without one. An entry written as an
    /// object may name the network (`{"address", "tag", "network"}`), and then allows
    /// only withdrawals on that network ([`AllowedDestination`]).
    pub withdrawal_address_allowlist: Option<Vec<AllowedDestination>>,
    /// When set, only these symbols trade (an empty list allows none).
    pub allowed_symbols: Option<Vec<String>>,
    /// Never these symbols; wins over `allowed_symbols`.
    pub blocked_symbols: Vec<String>,
    /// Maximum absolute net position per symbol, base-asset units.
    pub max_position_size: Option<Decimal>,
    pub max_leverage: Option<Decimal>,
    /// New non-reduce-only orders stop once the equity drop since 00:00 UTC reaches this.
    pub max_daily_loss_usd: Option<Decimal>,
    /// When set, callers must come from one of these networks (an empty list allows none).
    pub ip_allowlist: Option<Vec<IpNet>>,
    /// Let calls reach endpoints the exchange module does not classify (needs every scope).
    pub allow_unknown_endpoints: bool,
    /// Let calls reach key-management / account-settings endpoints (needs every scope).
    pub allow_manage_endpoints: bool,
    /// Stored and returned to bots, not enforced (DESIGN.md §7).
    pub stop_loss_percentage: Option<Decimal>,
}

/// One invalid field, for the `errors` member of a validation problem (DESIGN.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Largest USD amount or size a limit may hold (a quadrillion): far beyond any real
/// account, small enough that sums of a few limits never overflow `Decimal`.
const MAX_AMOUNT: Decimal = Decimal::from_parts(0xA4C6_8000, 0x3_8D7E, 0, false, 0); // 10^15
/// The most a spend cap (daily volume, withdrawals per day or per month) can be, in USD:
/// what keygate's spend ledger counts per call and per day (100 billion USD; amounts
/// beyond it count as this much, `keygate_storage::MAX_SPEND_MICROS`). A higher cap could
/// never be reached, so it is refused; one stored before this bound acts as it
/// ([`Limits::spend_caps_within_the_ledger`]).
pub const MAX_SPEND_CAP_USD: Decimal = Decimal::from_parts(0x4876_E800, 0x17, 0, false, 0); // 10^11
/// The limits the spend ledger is checked against.
const SPEND_CAPS: [&str; 3] = [
    "max_daily_volume_usd",
    "max_withdrawal_usd_per_day",
    "max_withdrawal_usd_per_month",
];
const MAX_LEVERAGE: Decimal = Decimal::from_parts(1000, 0, 0, false, 0);
const MAX_LIST_LEN: usize = 1000;
const MAX_SYMBOL_LEN: usize = 64;
const MAX_ADDRESS_LEN: usize = 256;

fn min_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y < x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Intersection of two optional allowlists, `None` = unrestricted.
fn intersect_lists<T: Clone>(
    a: &Option<Vec<T>>,
    b: &Option<Vec<T>>,
    same: impl Fn(&T, &T) -> Option<T>,
) -> Option<Vec<T>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (Some(x), Some(y)) => {
            let mut out = Vec::new();
            for i in x {
                for j in y {
                    if let Some(v) = same(i, j) {
                        out.push(v);
                    }
                }
            }
            Some(out)
        }
    }
}

impl Limits {
    /// The stricter of two limit sets (credential and connection): every cap the smaller,
    /// every allowlist the intersection, blocklists the union, flags only when both allow.
    pub fn merge_stricter(a: &Limits, b: &Limits) -> Limits {
        let mut blocked = a.blocked_symbols.clone();
        for s in &b.blocked_symbols {
            if !blocked
                .iter()
                .any(|x| normalize_symbol(x) == normalize_symbol(s))
            {
                blocked.push(s.clone());
            }
        }
        Limits {
            max_requests_per_minute: min_opt(a.max_requests_per_minute, b.max_requests_per_minute),
            max_requests_per_hour: min_opt(a.max_requests_per_hour, b.max_requests_per_hour),
            max_requests_per_day: min_opt(a.max_requests_per_day, b.max_requests_per_day),
            max_trade_usd: min_opt(a.max_trade_usd, b.max_trade_usd),
            max_daily_volume_usd: min_opt(a.max_daily_volume_usd, b.max_daily_volume_usd),
            max_withdrawal_usd_per_tx: min_opt(
                a.max_withdrawal_usd_per_tx,
                b.max_withdrawal_usd_per_tx,
            ),
            max_withdrawal_usd_per_day: min_opt(
                a.max_withdrawal_usd_per_day,
                b.max_withdrawal_usd_per_day,
            ),
            max_withdrawal_usd_per_month: min_opt(
                a.max_withdrawal_usd_per_month,
                b.max_withdrawal_usd_per_month,
            ),
            withdrawal_address_allowlist: intersect_lists(
                &a.withdrawal_address_allowlist,
                &b.withdrawal_address_allowlist,
                AllowedDestination::intersect,
            ),
            allowed_symbols: intersect_lists(&a.allowed_symbols, &b.allowed_symbols, |x, y| {
                (normalize_symbol(x) == normalize_symbol(y)).then(|| x.clone())
            }),
            blocked_symbols: blocked,
            max_position_size: min_opt(a.max_position_size, b.max_position_size),
            max_leverage: min_opt(a.max_leverage, b.max_leverage),
            max_daily_loss_usd: min_opt(a.max_daily_loss_usd, b.max_daily_loss_usd),
            // CIDR blocks either nest or are disjoint, so the intersection of two blocks
            // is the smaller one or nothing.
            ip_allowlist: intersect_lists(&a.ip_allowlist, &b.ip_allowlist, |x, y| {
                if x.contains(y) {
                    Some(*y)
                } else if y.contains(x) {
                    Some(*x)
                } else {
                    None
                }
            }),
            allow_unknown_endpoints: a.allow_unknown_endpoints && b.allow_unknown_endpoints,
            allow_manage_endpoints: a.allow_manage_endpoints && b.allow_manage_endpoints,
            stop_loss_percentage: min_opt(a.stop_loss_percentage, b.stop_loss_percentage),
        }
    }

    /// Whether these limits allow nothing that `old` refused: every cap as low or lower,
    /// every allowlist within the old one, the blocklist a superset, no flag newly on.
    /// (`stop_loss_percentage` is not enforced, so it does not count.) A change to limits
    /// that is not this widens what a key can do (see the routes' fresh-unlock rule).
    pub fn no_looser_than(&self, old: &Limits) -> bool {
        let mut both = Limits::merge_stricter(self, old);
        both.stop_loss_percentage = self.stop_loss_percentage;
        both == *self
    }

    /// Whether these limits constrain orders or withdrawals: sizes, volume, position,
    /// leverage, daily loss, withdrawal amounts or addresses, or symbol lists. Such limits
    /// cannot be checked on a call to an endpoint keygate does not classify.
    pub fn limit_orders_or_funds(&self) -> bool {
        self.max_trade_usd.is_some()
            || self.max_daily_volume_usd.is_some()
            || self.max_position_size.is_some()
            || self.max_leverage.is_some()
            || self.max_daily_loss_usd.is_some()
            || self.max_withdrawal_usd_per_tx.is_some()
            || self.max_withdrawal_usd_per_day.is_some()
            || self.max_withdrawal_usd_per_month.is_some()
            || self.withdrawal_address_allowlist.is_some()
            || self.allowed_symbols.is_some()
            || !self.blocked_symbols.is_empty()
    }

    /// Which spend caps these limits set: (daily volume, withdrawals per day or month).
    pub fn spend_caps(&self) -> (bool, bool) {
        (
            self.max_daily_volume_usd.is_some(),
            self.max_withdrawal_usd_per_day.is_some()
                || self.max_withdrawal_usd_per_month.is_some(),
        )
    }

    /// These limits with each spend cap at most [`MAX_SPEND_CAP_USD`] (limits stored before
    /// that bound was checked).
    pub fn spend_caps_within_the_ledger(mut self) -> Self {
        for cap in [
            &mut self.max_daily_volume_usd,
            &mut self.max_withdrawal_usd_per_day,
            &mut self.max_withdrawal_usd_per_month,
        ] {
            if let Some(c) = cap.as_mut() {
                *c = (*c).min(MAX_SPEND_CAP_USD);
            }
        }
        self
    }

    /// Check the limits an owner submits. Every problem is reported, with its field.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let amounts = [
            ("max_trade_usd", self.max_trade_usd),
            ("max_daily_volume_usd", self.max_daily_volume_usd),
            ("max_withdrawal_usd_per_tx", self.max_withdrawal_usd_per_tx),
            (
                "max_withdrawal_usd_per_day",
                self.max_withdrawal_usd_per_day,
            ),
            (
                "max_withdrawal_usd_per_month",
                self.max_withdrawal_usd_per_month,
            ),
            ("max_position_size", self.max_position_size),
            ("max_daily_loss_usd", self.max_daily_loss_usd),
        ];
        for (field, v) in amounts {
            if let Some(v) = v {
                if v.is_sign_negative() && !v.is_zero() {
                    errs.push(FieldError::new(field, "must not be negative"));
                } else if v > MAX_AMOUNT {
                    errs.push(FieldError::new(field, "must be at most 1000000000000000"));
                } else if SPEND_CAPS.contains(&field) && v > MAX_SPEND_CAP_USD {
                    errs.push(FieldError::new(field, "must be at most 100000000000"));
                }
            }
        }
        if let Some(l) = self.max_leverage {
            if l < Decimal::ONE || l > MAX_LEVERAGE {
                errs.push(FieldError::new(
                    "max_leverage",
                    "must be between 1 and 1000",
                ));
            }
        }
        if let Some(p) = self.stop_loss_percentage {
            if p <= Decimal::ZERO || p > Decimal::ONE_HUNDRED {
                errs.push(FieldError::new(
                    "stop_loss_percentage",
                    "must be greater than 0 and at most 100",
                ));
            }
        }
        // Nested request windows must not promise more in a short window than the long one.
        let (m, h, d) = (
            self.max_requests_per_minute,
            self.max_requests_per_hour,
            self.max_requests_per_day,
        );
        if let (Some(m), Some(h)) = (m, h) {
            if m > h {
                errs.push(FieldError::new(
                    "max_requests_per_minute",
                    "must not exceed max_requests_per_hour",
                ));
            }
        }
        if let (Some(h), Some(d)) = (h, d) {
            if h > d {
                errs.push(FieldError::new(
                    "max_requests_per_hour",
                    "must not exceed max_requests_per_day",
                ));
            }
        }
        if let (Some(m), Some(d)) = (m, d) {
            if m > d {
                errs.push(FieldError::new(
                    "max_requests_per_minute",
                    "must not exceed max_requests_per_day",
                ));
            }
        }
        if let (Some(tx), Some(day)) = (
            self.max_withdrawal_usd_per_tx,
            self.max_withdrawal_usd_per_day,
        ) {
            if tx > day {
                errs.push(FieldError::new(
                    "max_withdrawal_usd_per_tx",
                    "must not exceed max_withdrawal_usd_per_day",
                ));
            }
        }
        if let (Some(day), Some(month)) = (
            self.max_withdrawal_usd_per_day,
            self.max_withdrawal_usd_per_month,
        ) {
            if day > month {
                errs.push(FieldError::new(
                    "max_withdrawal_usd_per_day",
                    "must not exceed max_withdrawal_usd_per_month",
                ));
            }
        }

        if let Some(list) = &self.allowed_symbols {
            check_symbols("allowed_symbols", list, &mut errs);
        }
        check_symbols("blocked_symbols", &self.blocked_symbols, &mut errs);
        if let Some(allowed) = &self.allowed_symbols {
            for (i, s) in allowed.iter().enumerate() {
                let n = normalize_symbol(s);
                if !n.is_empty()
                    && self
                        .blocked_symbols
                        .iter()
                        .any(|b| normalize_symbol(b) == n)
                {
                    errs.push(FieldError::new(
                        format!("allowed_symbols[{i}]"),
                        "symbol is also in blocked_symbols",
                    ));
                }
            }
        }
        if let Some(list) = &self.withdrawal_address_allowlist {
            if list.len() > MAX_LIST_LEN {
                errs.push(FieldError::new(
                    "withdrawal_address_allowlist",
                    "at most 1000 entries",
                ));
            }
            for (i, a) in list.iter().enumerate() {
                let field = format!("withdrawal_address_allowlist[{i}]");
                let printable = |s: &str, max: usize| {
                    !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_graphic())
                };
                if !printable(&a.address, MAX_ADDRESS_LEN) {
                    errs.push(FieldError::new(
                        if a.network.is_some() {
                            format!("{field}.address")
                        } else {
                            field.clone()
                        },
                        "must be 1 to 256 printable ASCII characters without spaces",
                    ));
                }
                if let Some(t) = &a.tag {
                    // `address#` (an empty tag) reads as a bare address, as it always has.
                    // No `#`: the string form `address#tag` could not say where it starts.
                    if !(t.is_empty() || printable(t, MAX_ADDRESS_LEN) && !t.contains('#')) {
                        errs.push(FieldError::new(
                            format!("{field}.tag"),
                            "must be at most 256 printable ASCII characters without spaces or #",
                        ));
                    }
                }
                if let Some(n) = &a.network {
                    if !printable(n, MAX_SYMBOL_LEN) {
                        errs.push(FieldError::new(
                            format!("{field}.network"),
                            "must be 1 to 64 printable ASCII characters without spaces",
                        ));
                    }
                }
            }
        }
        if let Some(list) = &self.ip_allowlist {
            if list.len() > MAX_LIST_LEN {
                errs.push(FieldError::new("ip_allowlist", "at most 1000 entries"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

fn check_symbols(field: &str, list: &[String], errs: &mut Vec<FieldError>) {
    if list.len() > MAX_LIST_LEN {
        errs.push(FieldError::new(field, "at most 1000 entries"));
    }
    for (i, s) in list.iter().enumerate() {
        let ok = !s.is_empty()
            && s.len() <= MAX_SYMBOL_LEN
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | ':' | '.'))
            && !normalize_symbol(s).is_empty();
        if !ok {
            errs.push(FieldError::new(
                format!("{field}[{i}]"),
                "must be 1 to 64 ASCII letters, digits or / - _ : .",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn max_amount_constant_is_ten_to_fifteen() {
        assert_eq!(MAX_AMOUNT, d("1000000000000000"));
        assert_eq!(MAX_SPEND_CAP_USD, d("100000000000"));
    }

    /// Tightening is no looser; raising or dropping a cap, widening a list, shrinking the
    /// blocklist or turning a flag on is.
    #[test]
    fn which_changes_loosen_limits() {
        let old = Limits {
            max_trade_usd: Some(d("100")),
            allowed_symbols: Some(vec!["BTCUSDT".into(), "ETHUSDT".into()]),
            blocked_symbols: vec!["DOGEUSDT".into()],
            ip_allowlist: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            withdrawal_address_allowlist: Some(vec!["addr1".into()]),
            stop_loss_percentage: Some(d("5")),
            ..Limits::default()
        };
        assert!(old.no_looser_than(&old));
        let tighter = [
            Limits {
                max_trade_usd: Some(d("50")),
                ..old.clone()
            },
            Limits {
                max_daily_volume_usd: Some(d("1000")),
                ..old.clone()
            },
            Limits {
                allowed_symbols: Some(vec!["btc/usdt".into()]),
                ..old.clone()
            },
            Limits {
                blocked_symbols: vec!["DOGEUSDT".into(), "XRPUSDT".into()],
                ..old.clone()
            },
            Limits {
                ip_allowlist: Some(vec!["10.1.0.0/16".parse().unwrap()]),
                ..old.clone()
            },
            Limits {
                withdrawal_address_allowlist: Some(vec![]),
                ..old.clone()
            },
            // not enforced: a change is neither
            Limits {
                stop_loss_percentage: Some(d("50")),
                ..old.clone()
            },
        ];
        for (i, l) in tighter.iter().enumerate() {
            assert!(l.no_looser_than(&old), "tighter #{i}");
        }
        let looser = [
            Limits {
                max_trade_usd: Some(d("101")),
                ..old.clone()
            },
            Limits {
                max_trade_usd: None,
                ..old.clone()
            },
            Limits {
                allowed_symbols: None,
                ..old.clone()
            },
            Limits {
                allowed_symbols: Some(vec!["BTCUSDT".into(), "SOLUSDT".into()]),
                ..old.clone()
            },
            Limits {
                blocked_symbols: vec![],
                ..old.clone()
            },
            Limits {
                ip_allowlist: Some(vec!["0.0.0.0/0".parse().unwrap()]),
                ..old.clone()
            },
            Limits {
                ip_allowlist: None,
                ..old.clone()
            },
            Limits {
                withdrawal_address_allowlist: None,
                ..old.clone()
            },
            Limits {
                withdrawal_address_allowlist: Some(vec!["addr1".into(), "addr2".into()]),
                ..old.clone()
            },
            Limits {
                allow_unknown_endpoints: true,
                ..old.clone()
            },
            Limits {
                allow_manage_endpoints: true,
                ..old.clone()
            },
            Limits::default(),
        ];
        for (i, l) in looser.iter().enumerate() {
            assert!(!l.no_looser_than(&old), "looser #{i}");
        }
    }

    /// Which limits make an unknown endpoint's write unusable: those it cannot be checked
    /// against. Rates, IP lists and flags can be.
    #[test]
    fn which_limits_constrain_orders_or_funds() {
        let mut ips = Limits {
            max_requests_per_minute: Some(10),
            ip_allowlist: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            allow_unknown_endpoints: true,
            stop_loss_percentage: Some(d("5")),
            ..Limits::default()
        };
        assert!(!ips.limit_orders_or_funds());
        for set in [
            |l: &mut Limits| l.max_trade_usd = Some(d("1")),
            |l: &mut Limits| l.max_daily_volume_usd = Some(d("1")),
            |l: &mut Limits| l.max_position_size = Some(d("1")),
            |l: &mut Limits| l.max_leverage = Some(d("1")),
            |l: &mut Limits| l.max_daily_loss_usd = Some(d("1")),
            |l: &mut Limits| l.max_withdrawal_usd_per_tx = Some(d("1")),
            |l: &mut Limits| l.max_withdrawal_usd_per_day = Some(d("1")),
            |l: &mut Limits| l.max_withdrawal_usd_per_month = Some(d("1")),
            |l: &mut Limits| l.withdrawal_address_allowlist = Some(vec![]),
            |l: &mut Limits| l.allowed_symbols = Some(vec!["BTCUSDT".into()]),
            |l: &mut Limits| l.blocked_symbols = vec!["DOGEUSDT".into()],
        ] {
            let mut l = ips.clone();
            set(&mut l);
            assert!(l.limit_orders_or_funds(), "{l:?}");
        }
        ips.allow_manage_endpoints = true;
        assert!(!ips.limit_orders_or_funds());
    }

    /// A spend cap above what the ledger counts is refused, or, stored before, acts as it.
    #[test]
    fn spend_caps_stay_within_the_ledger() {
        let l = Limits {
            max_daily_volume_usd: Some(d("100000000001")),
            max_withdrawal_usd_per_month: Some(d("1e12")),
            max_trade_usd: Some(d("1e12")),
            ..Limits::default()
        };
        let fields: Vec<String> = l
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["max_daily_volume_usd", "max_withdrawal_usd_per_month"]
        );
        let c = l.spend_caps_within_the_ledger();
        assert_eq!(c.max_daily_volume_usd, Some(MAX_SPEND_CAP_USD));
        assert_eq!(c.max_withdrawal_usd_per_month, Some(MAX_SPEND_CAP_USD));
        assert_eq!(c.max_trade_usd, Some(d("1e12")), "not a spend cap");
    }

    #[test]
    fn default_is_unlimited_and_valid() {
        let l = Limits::default();
        assert!(l.validate().is_ok());
        assert!(!l.allow_manage_endpoints && !l.allow_unknown_endpoints);
    }

    #[test]
    fn serde_round_trip_strings_and_numbers() {
        let json = r#"{"max_trade_usd": 100.5, "max_leverage": "3", "ip_allowlist": ["10.0.0.0/8"],
                       "blocked_symbols": ["DOGE/USDT"]}"#;
        let l: Limits = serde_json::from_str(json).unwrap();
        assert_eq!(l.max_trade_usd, Some(d("100.5")));
        assert_eq!(l.max_leverage, Some(d("3")));
        assert_eq!(l.ip_allowlist.as_ref().unwrap().len(), 1);
        let out = serde_json::to_value(&l).unwrap();
        assert_eq!(out["max_trade_usd"], "100.5");
        let back: Limits = serde_json::from_value(out).unwrap();
        assert_eq!(back, l);
        assert!(serde_json::from_str::<Limits>(r#"{"max_trade": 1}"#).is_err());
        assert!(serde_json::from_str::<Limits>(r#"{"ip_allowlist": ["nope"]}"#).is_err());
    }

    #[test]
    fn merge_takes_stricter_values() {
        let a = Limits {
            max_trade_usd: Some(d("1000")),
            max_requests_per_minute: Some(10),
            allowed_symbols: Some(vec!["BTC/USDT".into(), "ETHUSDT".into()]),
            blocked_symbols: vec!["DOGEUSDT".into()],
            ip_allowlist: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            withdrawal_address_allowlist: Some(vec!["0xABCDEF".into(), "bc1q".into()]),
            allow_manage_endpoints: true,
            allow_unknown_endpoints: true,
            ..Limits::default()
        };
        let b = Limits {
            max_trade_usd: Some(d("500")),
            max_leverage: Some(d("5")),
            allowed_symbols: Some(vec!["BTCUSDT".into(), "SOLUSDT".into()]),
            blocked_symbols: vec!["doge/usdt".into(), "PEPEUSDT".into()],
            ip_allowlist: Some(vec![
                "10.1.0.0/16".parse().unwrap(),
                "192.168.0.0/16".parse().unwrap(),
            ]),
            withdrawal_address_allowlist: Some(vec!["0xabcdef".into()]),
            allow_unknown_endpoints: true,
            ..Limits::default()
        };
        let m = Limits::merge_stricter(&a, &b);
        assert_eq!(m.max_trade_usd, Some(d("500")));
        assert_eq!(m.max_requests_per_minute, Some(10));
        assert_eq!(m.max_leverage, Some(d("5")));
        assert_eq!(m.allowed_symbols, Some(vec!["BTC/USDT".to_string()]));
        assert_eq!(m.blocked_symbols, vec!["DOGEUSDT", "PEPEUSDT"]);
        assert_eq!(m.ip_allowlist, Some(vec!["10.1.0.0/16".parse().unwrap()]));
        assert_eq!(
            m.withdrawal_address_allowlist,
            Some(vec!["0xABCDEF".into()])
        );
        assert!(!m.allow_manage_endpoints);
        assert!(m.allow_unknown_endpoints);
        // symmetric in what it allows
        let m2 = Limits::merge_stricter(&b, &a);
        assert_eq!(m2.max_trade_usd, m.max_trade_usd);
        assert_eq!(m2.ip_allowlist, m.ip_allowlist);
        // disjoint allowlists intersect to "nothing allowed", never "unrestricted"
        let c = Limits {
            allowed_symbols: Some(vec!["XRPUSDT".into()]),
            ..Limits::default()
        };
        assert_eq!(Limits::merge_stricter(&a, &c).allowed_symbols, Some(vec![]));
        assert_eq!(
            Limits::merge_stricter(&Limits::default(), &Limits::default()),
            Limits::default()
        );
    }

    #[test]
    fn merged_allowlists_keep_a_network_either_side_names() {
        let on = |n: &str| AllowedDestination {
            network: Some(n.into()),
            ..AllowedDestination::parse("0xabc")
        };
        let any = Limits {
            withdrawal_address_allowlist: Some(vec!["0xabc".into()]),
            ..Limits::default()
        };
        let eth = Limits {
            withdrawal_address_allowlist: Some(vec![on("ETH")]),
            ..Limits::default()
        };
        let bsc = Limits {
            withdrawal_address_allowlist: Some(vec![on("BSC")]),
            ..Limits::default()
        };
        for (a, b) in [(&any, &eth), (&eth, &any)] {
            let m = Limits::merge_stricter(a, b);
            assert_eq!(m.withdrawal_address_allowlist, Some(vec![on("ETH")]));
        }
        assert_eq!(
            Limits::merge_stricter(&eth, &bsc).withdrawal_address_allowlist,
            Some(vec![])
        );
        // Pinning a network narrows; dropping the pin widens.
        assert!(eth.no_looser_than(&any));
        assert!(!any.no_looser_than(&eth));
        assert!(!bsc.no_looser_than(&eth));
    }

    #[test]
    fn validate_checks_each_part_of_an_allowlist_entry() {
        let entry = |address: &str, tag: Option<&str>, network: Option<&str>| AllowedDestination {
            address: address.into(),
            tag: tag.map(Into::into),
            network: network.map(Into::into),
        };
        let l = Limits {
            withdrawal_address_allowlist: Some(vec![
                entry("0xabc", None, Some("ETH")),
                entry("rAddr", Some("1"), Some("XRP")),
                entry("0xabc", Some(""), None),
                entry("", None, Some("ETH")),
                entry("rAddr", Some("a b"), None),
                entry("0xabc", None, Some("")),
                entry("0xabc", None, Some(&"N".repeat(65))),
                entry("rAddr", Some("1#2"), Some("XRP")),
            ]),
            ..Limits::default()
        };
        let errs = l.validate().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "withdrawal_address_allowlist[3].address",
                "withdrawal_address_allowlist[4].tag",
                "withdrawal_address_allowlist[5].network",
                "withdrawal_address_allowlist[6].network",
                "withdrawal_address_allowlist[7].tag",
            ]
        );
    }

    #[test]
    fn validate_reports_each_bad_field() {
        let l = Limits {
            max_trade_usd: Some(d("-1")),
            max_daily_volume_usd: Some(d("1e16")),
            max_leverage: Some(d("0.5")),
            stop_loss_percentage: Some(d("150")),
            max_requests_per_minute: Some(100),
            max_requests_per_hour: Some(10),
            max_withdrawal_usd_per_tx: Some(d("100")),
            max_withdrawal_usd_per_day: Some(d("50")),
            allowed_symbols: Some(vec!["BTCUSDT".into(), "".into(), "bad symbol".into()]),
            blocked_symbols: vec!["btc/usdt".into(), "ÄÖ".into()],
            withdrawal_address_allowlist: Some(vec!["".into(), "has space".into()]),
            ..Limits::default()
        };
        let errs = l.validate().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "max_trade_usd",
            "max_daily_volume_usd",
            "max_leverage",
            "stop_loss_percentage",
            "max_requests_per_minute",
            "max_withdrawal_usd_per_tx",
            "allowed_symbols[0]",
            "allowed_symbols[1]",
            "allowed_symbols[2]",
            "blocked_symbols[1]",
            "withdrawal_address_allowlist[0]",
            "withdrawal_address_allowlist[1]",
        ] {
            assert!(fields.contains(&f), "missing {f} in {fields:?}");
        }
    }

    #[test]
    fn validate_accepts_sensible_limits() {
        let l = Limits {
            max_trade_usd: Some(d("0")),
            max_leverage: Some(d("1")),
            max_requests_per_minute: Some(10),
            max_requests_per_hour: Some(100),
            max_requests_per_day: Some(1000),
            stop_loss_percentage: Some(d("2.5")),
            allowed_symbols: Some(vec!["BTC/USDT:USDT".into(), "ETH-USDT-SWAP".into()]),
            blocked_symbols: vec!["DOGEUSDT".into()],
            withdrawal_address_allowlist: Some(vec!["0xabc".into()]),
            ip_allowlist: Some(vec!["::1/128".parse().unwrap()]),
            ..Limits::default()
        };
        assert_eq!(l.validate(), Ok(()));
    }
}
