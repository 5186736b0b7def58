//! Property tests for `evaluate`: deny by default, no allowed call breaks a configured
//! limit (checked by an independent recomputation), and no input makes it panic.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, TimeZone, Utc};
use keygate_exchanges::{
    EndpointClass, OrderIntent, RequestIntent, Side, SizeUnit, WithdrawalIntent,
};
use keygate_policy::*;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn any_decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            0u32..=28
        )
            .prop_map(|(lo, mid, hi, neg, scale)| Decimal::from_parts(lo, mid, hi, neg, scale)),
        Just(Decimal::MAX),
        Just(Decimal::MIN),
        Just(Decimal::ZERO),
    ]
}

/// Mostly realistic amounts, sometimes zero, negative or huge.
fn amount() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        8 => (0i64..20_000, 0u32..3).prop_map(|(m, s)| Decimal::new(m, s)),
        1 => Just(Decimal::ZERO),
        1 => (1i64..1000).prop_map(|m| Decimal::new(-m, 1)),
        1 => any_decimal(),
    ]
}

fn class() -> impl Strategy<Value = EndpointClass> {
    prop_oneof![
        Just(EndpointClass::Public),
        Just(EndpointClass::Read),
        Just(EndpointClass::Trade),
        Just(EndpointClass::Withdraw),
        Just(EndpointClass::Transfer),
        Just(EndpointClass::SubAccount),
        Just(EndpointClass::Manage),
        Just(EndpointClass::Unknown),
    ]
}

const SYMBOLS: [(&str, &str, &str); 5] = [
    ("BTCUSDT", "BTC", "USDT"),
    ("BTC/USDT:USDT", "BTC", "USDT"),
    ("ETH-EUR", "ETH", "EUR"),
    ("BTC-USDT-SWAP", "BTC", "USDT"),
    ("XYZGBP", "XYZ", "GBP"),
];
const LIST_SYMBOLS: [&str; 4] = ["BTCUSDT", "eth/eur", "XYZ-GBP", "DOGEUSDT"];
const ADDRESSES: [&str; 3] = ["0xAbC123", "bc1qxyz", "TRON1"];

fn order() -> impl Strategy<Value = OrderIntent> {
    (
        (
            0usize..SYMBOLS.len(),
            any::<bool>(),
            proptest::option::of(prop_oneof![Just(Side::Buy), Just(Side::Sell)]),
        ),
        (
            proptest::option::of(amount()),
            proptest::option::of(amount()),
            proptest::option::of(amount()),
        ),
        (
            proptest::option::of(amount()),
            any::<bool>(),
            0u8..8,
            0u8..8,
            any::<bool>(),
        ),
    )
        .prop_map(
            |((si, contracts, side), (qty, price, qa), (lev, known_pair, ro, cancel, limit))| {
                let (sym, base, quote) = SYMBOLS[si];
                let mut o = OrderIntent::new(sym);
                if known_pair {
                    o.base = Some(base.into());
                    o.quote = Some(quote.into());
                }
                o.side = side;
                o.quantity = qty;
                o.price = price;
                o.price_is_limit = limit;
                o.quote_amount = qa;
                o.leverage = lev;
                o.size_unit = if contracts {
                    SizeUnit::Contracts
                } else {
                    SizeUnit::Base
                };
                o.reduce_only = ro == 0;
                o.borrows = ro == 1;
                o.is_cancel = cancel == 0;
                o
            },
        )
}

fn withdrawal() -> impl Strategy<Value = RequestIntent> {
    (0usize..4, amount(), 0usize..4, 0usize..4).prop_map(|(a, amount, ad, n)| {
        RequestIntent::Withdrawal(WithdrawalIntent {
            asset: ["USDT", "BTC", "XYZ", "EUR"][a].into(),
            amount,
            address: ["0xabc123", "bc1qxyz", "BC1QXYZ", "elsewhere"][ad].into(),
            network: [None, Some("ETH"), Some("eth"), Some("BSC")][n].map(Into::into),
            tag: None,
        })
    })
}

fn intent() -> impl Strategy<Value = RequestIntent> {
    prop_oneof![
        Just(RequestIntent::None),
        Just(RequestIntent::None),
        proptest::collection::vec(order(), 0..4)
            .prop_map(|orders| RequestIntent::Orders { orders }),
        withdrawal(),
        (proptest::option::of(amount())).prop_map(|amount| RequestIntent::Transfer {
            asset: "USDT".into(),
            amount
        }),
        (proptest::option::of(amount())).prop_map(|amount| RequestIntent::Borrow {
            asset: "USDT".into(),
            amount
        }),
    ]
}

fn opt_amount() -> impl Strategy<Value = Option<Decimal>> {
    proptest::option::weighted(0.5, amount())
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        (
            proptest::option::of(0u32..5),
            proptest::option::of(0u32..5),
            proptest::option::of(0u32..5),
        ),
        (
            opt_amount(),
            opt_amount(),
            opt_amount(),
            opt_amount(),
            opt_amount(),
        ),
        (opt_amount(), opt_amount(), opt_amount()),
        (
            proptest::option::of(proptest::collection::vec(
                (
                    proptest::sample::select(ADDRESSES.to_vec()),
                    proptest::sample::select(vec![None, Some("ETH"), Some("BSC")]),
                ),
                0..3,
            )),
            proptest::option::of(proptest::sample::subsequence(LIST_SYMBOLS.to_vec(), 0..4)),
            proptest::sample::subsequence(LIST_SYMBOLS.to_vec(), 0..2),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (rm, rh, rd),
                (tr, dv, wtx, wd, wm),
                (pos, lev, loss),
                (addrs, allowed, blocked, au, am),
            )| {
                Limits {
                    max_requests_per_minute: rm,
                    max_requests_per_hour: rh,
                    max_requests_per_day: rd,
                    max_trade_usd: tr,
                    max_daily_volume_usd: dv,
                    max_withdrawal_usd_per_tx: wtx,
                    max_withdrawal_usd_per_day: wd,
                    max_withdrawal_usd_per_month: wm,
                    withdrawal_address_allowlist: addrs.map(|v| {
                        v.into_iter()
                            .map(|(a, n)| AllowedDestination {
                                network: n.map(Into::into),
                                ..AllowedDestination::parse(a)
                            })
                            .collect()
                    }),
                    allowed_symbols: allowed.map(|v| v.into_iter().map(String::from).collect()),
                    blocked_symbols: blocked.into_iter().map(String::from).collect(),
                    max_position_size: pos,
                    max_leverage: lev,
                    max_daily_loss_usd: loss,
                    ip_allowlist: None,
                    allow_unknown_endpoints: au,
                    allow_manage_endpoints: am,
                    stop_loss_percentage: None,
                }
            },
        )
}

fn connection_rates() -> impl Strategy<Value = ConnectionRates> {
    let cap = || proptest::option::of(0u32..5);
    ((cap(), cap(), cap()), (0u32..6, 0u32..6, 0u32..6)).prop_map(|((pm, ph, pd), (m, h, d))| {
        ConnectionRates {
            max_per_minute: pm,
            max_per_hour: ph,
            max_per_day: pd,
            this_minute: m,
            this_hour: h,
            today: d,
        }
    })
}

fn counters() -> impl Strategy<Value = Counters> {
    (
        (0u32..6, 0u32..6, 0u32..6),
        (amount(), amount(), amount()),
        (
            proptest::option::of(amount()),
            proptest::option::of(amount()),
            any::<bool>(),
        ),
    )
        .prop_map(|((m, h, d), (vol, wt, wm), (pos, loss, neg))| {
            let mut c = Counters {
                requests_this_minute: m,
                requests_this_hour: h,
                requests_today: d,
                daily_volume_usd: vol,
                withdrawals_today_usd: wt,
                withdrawals_this_month_usd: wm,
                daily_loss_usd: loss,
                ..Counters::default()
            };
            if let Some(p) = pos {
                c.net_positions
                    .insert("BTC/USDT".into(), if neg { -p } else { p });
            }
            c
        })
}

fn prices() -> impl Strategy<Value = Prices> {
    (opt_amount(), opt_amount(), opt_amount(), opt_amount()).prop_map(|(btc, eth, eur, cv)| {
        let mut p = Prices::default();
        for (k, v) in [("BTC", btc), ("ETH", eth), ("EUR", eur)] {
            if let Some(v) = v {
                p.usd.insert(k.into(), v);
            }
        }
        if let Some(cv) = cv {
            p.contract_values.insert("BTC-USDT-SWAP".into(), cv);
            p.contract_values.insert("BTCUSDT".into(), cv);
        }
        p
    })
}

fn scopes() -> impl Strategy<Value = ScopeSet> {
    proptest::sample::subsequence(Scope::ALL.to_vec(), 0..=5).prop_map(|v| v.into_iter().collect())
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 34, 56).unwrap()
}

fn request(class: EndpointClass, intent: RequestIntent) -> CallRequest {
    CallRequest {
        class,
        intent,
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        path: "/p".into(),
        writes: true,
        unclassified: class == EndpointClass::Unknown,
    }
}

// ---- independent recomputation of every limit ----

fn pos(x: Option<Decimal>) -> Option<Decimal> {
    x.filter(|v| *v > Decimal::ZERO)
}

fn usd(p: &Prices, asset: &str) -> Option<Decimal> {
    if USD_STABLECOINS.contains(&asset.to_ascii_uppercase().as_str()) {
        Some(Decimal::ONE)
    } else {
        pos(p.usd.get(&asset.to_ascii_uppercase()).copied())
    }
}

/// The price the order executes at or better, when it is a limit.
fn limit(o: &OrderIntent) -> Option<Decimal> {
    pos(o.price).filter(|_| o.price_is_limit)
}

/// Base units of the order, at least. A quote amount converts at the limit price (a sell
/// cannot sell more), or for a buy or unknown side at the larger of that and the reference
/// conversion (a buy limit may fill lower and buy more).
fn base_units(o: &OrderIntent, p: &Prices) -> Option<Decimal> {
    // Keys of the map may be written in any notation, as in `Prices::contract_value`.
    let cv = || p.contract_value(&o.symbol);
    match (o.quantity, o.size_unit) {
        (Some(q), SizeUnit::Base) => Some(q),
        (Some(q), SizeUnit::Contracts) => q.checked_mul(cv()?),
        (None, _) => {
            let qa = o.quote_amount?;
            let reference = || -> Option<Decimal> {
                qa.checked_mul(usd(p, o.quote.as_deref()?)?)?
                    .checked_div(usd(p, o.base.as_deref()?)?)
            };
            match limit(o) {
                Some(px) => {
                    let stated = qa.checked_div(px)?;
                    if o.side == Some(Side::Sell) {
                        Some(stated)
                    } else {
                        reference().map(|r| stated.max(r))
                    }
                }
                None => reference(),
            }
        }
    }
}

/// Lower bound of the order's USD notional (the largest of the ways it can be valued): a
/// limit's price (for a sell or unknown side, at least the reference price), else the
/// reference price; a price that is not a limit never counts.
fn notional(o: &OrderIntent, p: &Prices) -> Option<Decimal> {
    let mut vals = Vec::new();
    if let Some(qa) = o.quote_amount {
        vals.push(qa.checked_mul(usd(p, o.quote.as_deref()?)?)?);
    }
    if o.quantity.is_some() {
        let b = base_units(o, p)?;
        let base_usd = o.base.as_deref().and_then(|a| usd(p, a));
        let v = match limit(o) {
            Some(px) => {
                let stated = b
                    .checked_mul(px)?
                    .checked_mul(usd(p, o.quote.as_deref()?)?)?;
                match (o.side, base_usd) {
                    (Some(Side::Buy), _) => stated,
                    (_, None) => return None,
                    (_, Some(u)) => stated.max(b.checked_mul(u)?),
                }
            }
            None => b.checked_mul(base_usd?)?,
        };
        vals.push(v);
    }
    vals.into_iter().max()
}

fn symbol_ok(l: &Limits, o: &OrderIntent) -> bool {
    let mut forms = vec![normalize_symbol(&o.symbol)];
    if let (Some(b), Some(q)) = (&o.base, &o.quote) {
        forms.push(format!("{b}{q}").to_uppercase());
    }
    let hit = |list: &[String]| list.iter().any(|e| forms.contains(&normalize_symbol(e)));
    !hit(&l.blocked_symbols) && l.allowed_symbols.as_ref().is_none_or(|a| hit(a))
}

fn check_allowed_respects_limits(pol: &Policy, req: &CallRequest) -> Result<(), TestCaseError> {
    let l = &pol.limits;
    let c = &pol.counters;
    if req.class == EndpointClass::Public && req.intent == RequestIntent::None {
        return Ok(());
    }
    prop_assert!(
        !(req.class == EndpointClass::Unknown
            && req.writes
            && (l.limit_orders_or_funds()
                || pol.caps_elsewhere.volume
                || pol.caps_elsewhere.withdrawals)),
        "an unknown endpoint's write allowed under order or withdrawal limits"
    );
    for (lim, used) in [
        (l.max_requests_per_minute, c.requests_this_minute),
        (l.max_requests_per_hour, c.requests_this_hour),
        (l.max_requests_per_day, c.requests_today),
        (
            pol.connection_rates.max_per_minute,
            pol.connection_rates.this_minute,
        ),
        (
            pol.connection_rates.max_per_hour,
            pol.connection_rates.this_hour,
        ),
        (pol.connection_rates.max_per_day, pol.connection_rates.today),
    ] {
        if let Some(lim) = lim {
            prop_assert!(used < lim, "rate limit broken");
        }
    }
    match &req.intent {
        RequestIntent::Orders { orders } => {
            let mut vol = Decimal::ZERO;
            let mut counted = false;
            let mut net = c.net_positions.values().next().copied().unwrap_or_default();
            for o in orders.iter().filter(|o| !o.is_cancel) {
                prop_assert!(symbol_ok(l, o), "symbol list broken");
                prop_assert!(
                    !(o.borrows && l.max_leverage.is_some() && !o.is_cancel),
                    "a borrowing order under max_leverage"
                );
                if let (Some(lev), Some(max)) = (o.leverage, l.max_leverage) {
                    prop_assert!(lev <= max, "leverage broken");
                }
                if o.reduce_only {
                    continue;
                }
                if let Some(max) = l.max_daily_loss_usd {
                    prop_assert!(
                        c.daily_loss_usd.is_some_and(|x| x < max),
                        "daily loss broken"
                    );
                }
                if o.quantity.is_none() && o.quote_amount.is_none() && o.leverage.is_some() {
                    continue;
                }
                if l.max_trade_usd.is_some()
                    || l.max_daily_volume_usd.is_some()
                    || pol.caps_elsewhere.volume
                {
                    let n = notional(o, &pol.prices);
                    prop_assert!(n.is_some(), "notional unknown but allowed");
                    let n = n.unwrap();
                    if let Some(max) = l.max_trade_usd {
                        prop_assert!(n <= max, "notional broken: {} > {}", n, max);
                    }
                    vol = vol.checked_add(n).unwrap();
                    counted = true;
                }
                if let Some(max) = l.max_position_size {
                    let q = base_units(o, &pol.prices);
                    prop_assert!(
                        q.is_some() && o.side.is_some(),
                        "position unknown but allowed"
                    );
                    let q = q.unwrap();
                    // all generated symbols but ETH-EUR / XYZGBP are BTC/USDT
                    if normalize_symbol(&o.symbol).starts_with("BTCUSDT")
                        && o.symbol != "BTC-USDT-SWAP"
                    {
                        net = net
                            .checked_add(if o.side == Some(Side::Buy) { q } else { -q })
                            .unwrap();
                        prop_assert!(net.abs() <= max, "position broken");
                    } else {
                        prop_assert!(q <= max, "position broken");
                    }
                }
            }
            if let (Some(max), true) = (l.max_daily_volume_usd, counted) {
                prop_assert!(
                    c.daily_volume_usd
                        .checked_add(vol)
                        .is_some_and(|t| t <= max),
                    "daily volume broken"
                );
            }
        }
        RequestIntent::Withdrawal(w) => {
            prop_assert!(w.amount > Decimal::ZERO);
            if let Some(list) = &l.withdrawal_address_allowlist {
                prop_assert!(
                    list.iter().any(|a| same_address(&a.address, &w.address)
                        && a.network.as_deref().is_none_or(|n| w
                            .network
                            .as_deref()
                            .is_some_and(|wn| wn.eq_ignore_ascii_case(n)))),
                    "address or network broken"
                );
            }
            if pol.caps_elsewhere.withdrawals {
                prop_assert!(
                    usd(&pol.prices, &w.asset)
                        .and_then(|p| w.amount.checked_mul(p))
                        .is_some(),
                    "withdrawal value unknown but allowed under another connection's cap"
                );
            }
            let caps = [
                (l.max_withdrawal_usd_per_tx, Decimal::ZERO),
                (l.max_withdrawal_usd_per_day, c.withdrawals_today_usd),
                (l.max_withdrawal_usd_per_month, c.withdrawals_this_month_usd),
            ];
            for (cap, spent) in caps {
                if let Some(cap) = cap {
                    let v = usd(&pol.prices, &w.asset).and_then(|p| w.amount.checked_mul(p));
                    prop_assert!(v.is_some(), "withdrawal value unknown but allowed");
                    prop_assert!(
                        spent.checked_add(v.unwrap()).is_some_and(|t| t <= cap),
                        "withdrawal cap broken"
                    );
                }
            }
        }
        RequestIntent::Borrow { .. } => {
            prop_assert!(
                pol.limits.max_leverage.is_none(),
                "a loan under max_leverage"
            );
        }
        RequestIntent::Transfer { .. }
        | RequestIntent::SubAccountTransfer { .. }
        | RequestIntent::None => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// With an empty scope set nothing but a public call without intent is allowed,
    /// whatever the limits (including the manage/unknown flags).
    #[test]
    fn deny_by_default(l in limits(), c in counters(), p in prices(), cl in class(), i in intent()) {
        let pol = Policy {
            scopes: ScopeSet::empty(),
            limits: Limits { ip_allowlist: None, ..l },
            key: KeyState::active(),
            vault: VaultState::NotPasswordProtected,
            counters: c,
            connection_rates: ConnectionRates::default(),
            prices: p,
            caps_elsewhere: CapsElsewhere::default(),
        };
        let req = request(cl, i);
        let public = req.class == EndpointClass::Public && req.intent == RequestIntent::None;
        let dec = evaluate(&pol, &req, now());
        prop_assert_eq!(dec.is_allowed(), public);
        if let Decision::Allow(a) = dec {
            prop_assert!(!a.may_sign());
        }
    }

    /// Allow implies every configured limit holds, by an independent recomputation.
    #[test]
    fn allowed_calls_respect_every_limit(
        s in scopes(), l in limits(), c in counters(), p in prices(), cl in class(), i in intent(),
        elsewhere in any::<(bool, bool)>(), cr in connection_rates()
    ) {
        let pol = Policy {
            scopes: s,
            limits: l,
            key: KeyState::active(),
            vault: VaultState::Unlocked,
            counters: c,
            connection_rates: cr,
            prices: p,
            caps_elsewhere: CapsElsewhere { volume: elsewhere.0, withdrawals: elsewhere.1 },
        };
        let req = request(cl, i);
        match evaluate(&pol, &req, now()) {
            Decision::Allow(_) => check_allowed_respects_limits(&pol, &req)?,
            Decision::Deny(d) => {
                prop_assert_eq!(d.status, if d.code == DenyCode::RateLimited { 429 } else { 403 });
                prop_assert_eq!(d.retry_after_secs.is_some(), d.code == DenyCode::RateLimited);
            }
        }
    }

    /// Arbitrary decimals anywhere (huge, negative, max scale) never panic.
    #[test]
    fn never_panics_on_arbitrary_decimals(
        a in proptest::collection::vec(any_decimal(), 16),
        s in scopes(), cl in class(), flags in any::<(bool, bool, bool, bool)>()
    ) {
        let mut o = OrderIntent::new("BTCUSDT");
        o.base = Some("BTC".into());
        o.quote = Some(if flags.0 { "USDT" } else { "EUR" }.into());
        o.side = Some(if flags.1 { Side::Buy } else { Side::Sell });
        o.quantity = Some(a[0]);
        o.price = Some(a[1]).filter(|_| flags.2);
        o.price_is_limit = flags.2 && flags.3;
        o.quote_amount = Some(a[2]).filter(|_| !flags.2);
        o.leverage = Some(a[3]);
        o.size_unit = if flags.3 { SizeUnit::Contracts } else { SizeUnit::Base };
        let mut prices = Prices::default();
        prices.usd.insert("BTC".into(), a[4]);
        prices.usd.insert("EUR".into(), a[5]);
        prices.contract_values.insert("BTCUSDT".into(), a[6]);
        let mut counters = Counters {
            daily_volume_usd: a[7],
            withdrawals_today_usd: a[8],
            withdrawals_this_month_usd: a[9],
            daily_loss_usd: Some(a[10]),
            ..Counters::default()
        };
        counters.net_positions.insert("BTCUSDT".into(), a[11]);
        let limits = Limits {
            max_trade_usd: Some(a[12]),
            max_daily_volume_usd: Some(a[13]),
            max_position_size: Some(a[14]),
            max_leverage: Some(a[15]),
            max_daily_loss_usd: Some(a[12]),
            max_withdrawal_usd_per_tx: Some(a[13]),
            max_withdrawal_usd_per_day: Some(a[14]),
            max_withdrawal_usd_per_month: Some(a[15]),
            ..Limits::default()
        };
        let pol = Policy {
            scopes: s,
            limits,
            key: KeyState::active(),
            vault: VaultState::NotPasswordProtected,
            counters,
            connection_rates: ConnectionRates::default(),
            prices,
            caps_elsewhere: CapsElsewhere::default(),
        };
        for intent in [
            RequestIntent::Orders { orders: vec![o.clone(), o] },
            RequestIntent::Withdrawal(WithdrawalIntent {
                asset: "BTC".into(), amount: a[0], address: "x".into(), network: None, tag: None,
            }),
        ] {
            let _ = evaluate(&pol, &request(cl, intent), now());
        }
    }

    /// Same, focused on orders that reach the size checks (all scopes, no rate limits).
    #[test]
    fn allowed_orders_respect_every_limit(
        l in limits(), c in counters(), p in prices(),
        orders in proptest::collection::vec(order(), 1..4),
    ) {
        let pol = Policy {
            scopes: ScopeSet::all(),
            limits: Limits { max_requests_per_minute: None, max_requests_per_hour: None,
                             max_requests_per_day: None, ..l },
            key: KeyState::active(),
            vault: VaultState::NotPasswordProtected,
            counters: c,
            connection_rates: ConnectionRates::default(),
            prices: p,
            caps_elsewhere: CapsElsewhere::default(),
        };
        let req = request(EndpointClass::Trade, RequestIntent::Orders { orders });
        if evaluate(&pol, &req, now()).is_allowed() {
            check_allowed_respects_limits(&pol, &req)?;
        }
    }

    /// Same, focused on withdrawals.
    #[test]
    fn allowed_withdrawals_respect_every_limit(
        l in limits(), c in counters(), p in prices(), i in withdrawal(),
    ) {
        let pol = Policy {
            scopes: ScopeSet::all(),
            limits: Limits { max_requests_per_minute: None, max_requests_per_hour: None,
                             max_requests_per_day: None, ..l },
            key: KeyState::active(),
            vault: VaultState::NotPasswordProtected,
            counters: c,
            connection_rates: ConnectionRates::default(),
            prices: p,
            caps_elsewhere: CapsElsewhere::default(),
        };
        let req = request(EndpointClass::Withdraw, i);
        if evaluate(&pol, &req, now()).is_allowed() {
            check_allowed_respects_limits(&pol, &req)?;
        }
    }

    #[test]
    fn merge_is_never_looser(a in limits(), b in limits()) {
        let m = Limits::merge_stricter(&a, &b);
        for (x, y, z) in [
            (a.max_trade_usd, b.max_trade_usd, m.max_trade_usd),
            (a.max_daily_volume_usd, b.max_daily_volume_usd, m.max_daily_volume_usd),
            (a.max_position_size, b.max_position_size, m.max_position_size),
            (a.max_leverage, b.max_leverage, m.max_leverage),
        ] {
            for side in [x, y].into_iter().flatten() {
                prop_assert!(z.is_some_and(|z| z <= side));
            }
        }
        prop_assert!(m.allow_manage_endpoints <= (a.allow_manage_endpoints && b.allow_manage_endpoints));
        if let Some(allowed) = &m.allowed_symbols {
            for s in allowed {
                for src in [&a.allowed_symbols, &b.allowed_symbols].into_iter().flatten() {
                    prop_assert!(src.iter().any(|x| normalize_symbol(x) == normalize_symbol(s)));
                }
            }
        } else {
            prop_assert!(a.allowed_symbols.is_none() && b.allowed_symbols.is_none());
        }
    }

    /// The merged withdrawal allowlist allows exactly what both lists allow: address,
    /// tag and network.
    #[test]
    fn merged_allowlists_allow_what_both_allow(a in limits(), b in limits(), i in withdrawal()) {
        let RequestIntent::Withdrawal(w) = i else { unreachable!() };
        let allows = |l: &Limits| match &l.withdrawal_address_allowlist {
            None => true,
            Some(list) => list.iter().any(|e| {
                e.names(&w.address, w.tag.as_deref()) && e.allows_network(w.network.as_deref())
            }),
        };
        let m = Limits::merge_stricter(&a, &b);
        prop_assert_eq!(allows(&m), allows(&a) && allows(&b));
    }

    #[test]
    fn normalize_symbol_is_idempotent(s in "\\PC{0,20}") {
        let n = normalize_symbol(&s);
        prop_assert_eq!(normalize_symbol(&n), n);
    }
}
