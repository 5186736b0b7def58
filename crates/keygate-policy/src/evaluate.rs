//! The decision itself: `evaluate(policy, request, now) -> Decision`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Timelike, Utc};
use keygate_exchanges::{
    EndpointClass, OrderIntent, RequestIntent, Side, SizeUnit, WithdrawalIntent,
};
use rust_decimal::Decimal;

use crate::decision::{Decision, Denial, DenyCode, OrderApproval, PolicyApproved};
use crate::destination::nonempty;
use crate::limits::Limits;
use crate::scope::{Scope, ScopeSet};
use crate::state::{
    CapsElsewhere, ConnectionRates, Counters, KeyState, KeyStatus, Prices, VaultState,
};
use crate::symbol::normalize_symbol;

/// One call through the gateway, as the server classified and parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    pub class: EndpointClass,
    /// From `Exchange::parse_intent` for trade/withdraw/transfer classes, else `None`.
    pub intent: RequestIntent,
    /// The caller's address as the server determined it (trusted proxy handling is the
    /// server's job).
    pub client_ip: IpAddr,
    /// Exchange path, used only in human-readable details.
    pub path: String,
    /// The HTTP method may change state (anything but GET and HEAD).
    pub writes: bool,
    /// The exchange module does not know the endpoint: `class` is `Unknown`, or what the
    /// gateway took it for by its path (a withdrawal or transfer). Such a call must pass
    /// what any unknown endpoint must (the connection allows them, every scope, no write
    /// under order or funds limits), and then its class's own checks.
    pub unclassified: bool,
}

/// Everything policy knows about the account at the moment of the call.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Effective scopes: see [`crate::scopes_for_connection`].
    pub scopes: ScopeSet,
    /// Effective limits: see [`Limits::merge_stricter`]. Its request caps count every
    /// call of the key (the server puts the credential's own there).
    pub limits: Limits,
    pub key: KeyState,
    pub vault: VaultState,
    pub counters: Counters,
    /// The connection's own request caps and counts.
    pub connection_rates: ConnectionRates,
    pub prices: Prices,
    /// Caps on the key's other connections, which count this call's amounts too.
    pub caps_elsewhere: CapsElsewhere,
}

/// Decide whether `request` may be signed and forwarded. Pure: same inputs, same answer.
///
/// Checks run in this order and the first failure decides: key state, vault, IP
/// allowlist, endpoint class and scopes, request rates, then what the request does
/// (orders, withdrawal). A public call with no intent needs only the IP allowlist.
pub fn evaluate(policy: &Policy, request: &CallRequest, now: DateTime<Utc>) -> Decision {
    match decide(policy, request, now) {
        Ok(approved) => Decision::Allow(approved),
        Err(denial) => Decision::Deny(denial),
    }
}

fn decide(p: &Policy, req: &CallRequest, now: DateTime<Utc>) -> Result<PolicyApproved, Denial> {
    if req.class == EndpointClass::Public && req.intent == RequestIntent::None {
        // Public calls are not signed: no key, vault or scope is involved. The IP
        // allowlist still applies because it restricts who may use the connection at all.
        check_ip(&p.limits, req.client_ip)?;
        return Ok(PolicyApproved {
            class: req.class,
            signed: false,
            orders: Vec::new(),
            withdrawal_usd: None,
        });
    }
    check_key(&p.key, now)?;
    check_vault(p.vault)?;
    check_ip(&p.limits, req.client_ip)?;
    check_endpoint(p, req)?;
    check_rates(&p.limits, &p.counters, &p.connection_rates, now)?;

    let mut approved = PolicyApproved {
        class: req.class,
        signed: true,
        orders: Vec::new(),
        withdrawal_usd: None,
    };
    match &req.intent {
        RequestIntent::None => {
            if req.class == EndpointClass::Withdraw && has_withdrawal_limits(&p.limits) {
                return Err(Denial::new(
                    DenyCode::WithdrawalUnparsable,
                    "withdrawal could not be read from the request while withdrawal limits are set",
                ));
            }
        }
        RequestIntent::Orders { orders } => approved.orders = check_orders(p, orders)?,
        RequestIntent::Withdrawal(w) => approved.withdrawal_usd = check_withdrawal(p, w)?,
        RequestIntent::Borrow { .. } if p.limits.max_leverage.is_some() => {
            return Err(Denial::new(
                DenyCode::LeverageExceedsLimit,
                "a margin loan is refused while max_leverage is set: the leverage it makes is the account's, which keygate cannot tell",
            ));
        }
        RequestIntent::Transfer { amount, .. }
        | RequestIntent::SubAccountTransfer { amount, .. }
        | RequestIntent::Borrow { amount, .. } => {
            if amount.is_some_and(|a| a.is_sign_negative() && !a.is_zero()) {
                return Err(Denial::new(
                    DenyCode::OrderUnparsable,
                    "transfer amount is negative",
                ));
            }
        }
    }
    Ok(approved)
}

fn check_key(key: &KeyState, now: DateTime<Utc>) -> Result<(), Denial> {
    let deny = |code, msg: &str| Err(Denial::new(code, msg));
    match key.status {
        KeyStatus::Revoked => return deny(DenyCode::CredentialRevoked, "credential is revoked"),
        KeyStatus::Suspended => {
            return deny(DenyCode::CredentialSuspended, "credential is suspended")
        }
        KeyStatus::Pending => {
            return deny(
                DenyCode::CredentialPending,
                "credential is pending: the exchange's API key id is not attached yet",
            )
        }
        KeyStatus::Expired => return deny(DenyCode::CredentialExpired, "credential has expired"),
        KeyStatus::Active | KeyStatus::Rotating => {}
    }
    if key.expires_at.is_some_and(|t| t <= now) {
        return deny(DenyCode::CredentialExpired, "credential has expired");
    }
    if key.status == KeyStatus::Rotating {
        // Fail closed: a rotating version without a grace end is treated as ended.
        match key.grace_period_ends_at {
            Some(t) if t > now => {}
            _ => {
                return deny(
                    DenyCode::CredentialRevoked,
                    "credential version was rotated and its grace period has ended",
                )
            }
        }
    }
    Ok(())
}

fn check_vault(vault: VaultState) -> Result<(), Denial> {
    match vault {
        VaultState::Locked => Err(Denial::new(
            DenyCode::VaultLocked,
            "vault is locked: unlock it to sign requests",
        )),
        VaultState::Unlocked | VaultState::NotPasswordProtected => Ok(()),
    }
}

fn check_ip(limits: &Limits, ip: IpAddr) -> Result<(), Denial> {
    let Some(nets) = &limits.ip_allowlist else {
        return Ok(());
    };
    // An IPv4 client seen through a dual-stack socket arrives as ::ffff:a.b.c.d.
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    let ok = nets
        .iter()
        .any(|n| n.contains(&ip) || mapped.is_some_and(|m| n.contains(&m)));
    if ok {
        Ok(())
    } else {
        Err(Denial::new(
            DenyCode::IpNotAllowed,
            format!("client address {ip} is not in the IP allowlist"),
        ))
    }
}

fn intent_scope(intent: &RequestIntent) -> Option<Scope> {
    match intent {
        RequestIntent::None => None,
        RequestIntent::Orders { .. } => Some(Scope::Trade),
        RequestIntent::Withdrawal(_) => Some(Scope::Withdraw),
        RequestIntent::Transfer { .. } => Some(Scope::Transfer),
        RequestIntent::SubAccountTransfer { .. } => Some(Scope::SubAccount),
        RequestIntent::Borrow { .. } => Some(Scope::Trade),
    }
}

fn check_endpoint(p: &Policy, req: &CallRequest) -> Result<(), Denial> {
    let path = for_message(&req.path, 128);
    // an endpoint the module does not know, taken for a withdrawal or a transfer by its
    // path: only more checks than any unknown endpoint gets, never fewer
    if req.unclassified && req.class != EndpointClass::Unknown {
        check_manage_or_unknown(p, req, EndpointClass::Unknown, &path)?;
    }
    match req.class {
        EndpointClass::Manage | EndpointClass::Unknown => {
            check_manage_or_unknown(p, req, req.class, &path)?;
        }
        class => {
            if let Some(s) = Scope::for_class(class) {
                if !p.scopes.contains(s) {
                    return Err(Denial::new(
                        DenyCode::ScopeDenied,
                        format!("{path} needs scope {}", s.as_str()),
                    ));
                }
            }
        }
    }
    // What the body does counts too: an order on a mis-classified endpoint still needs
    // `trade`, a withdrawal `withdraw`.
    if let Some(s) = intent_scope(&req.intent) {
        if !p.scopes.contains(s) {
            return Err(Denial::new(
                DenyCode::ScopeDenied,
                format!("{path} carries a request that needs scope {}", s.as_str()),
            ));
        }
    }
    Ok(())
}

/// The gates of a key-management endpoint, or of one keygate does not classify (`class`).
fn check_manage_or_unknown(
    p: &Policy,
    req: &CallRequest,
    class: EndpointClass,
    path: &str,
) -> Result<(), Denial> {
    let (flag, code, what) = if class == EndpointClass::Manage {
        (
            p.limits.allow_manage_endpoints,
            DenyCode::EndpointManageDenied,
            "a key-management / account-settings endpoint",
        )
    } else {
        (
            p.limits.allow_unknown_endpoints,
            DenyCode::EndpointUnknown,
            "an endpoint keygate does not classify",
        )
    };
    if !flag {
        return Err(Denial::new(
            code,
            format!("{path} is {what}; the connection does not allow it"),
        ));
    }
    // Such an endpoint may do anything (even mint a withdrawal-enabled key), so
    // it needs every scope.
    if !p.scopes.contains_all(&ScopeSet::all()) {
        return Err(Denial::new(
            DenyCode::ScopeDenied,
            format!("{path} is {what} and needs every scope"),
        ));
    }
    // Its call cannot be sized: where limits constrain orders or funds, here or on
    // another connection of the key (whose caps count this call too), only reads
    // reach one.
    let limited =
        p.limits.limit_orders_or_funds() || p.caps_elsewhere.volume || p.caps_elsewhere.withdrawals;
    if class == EndpointClass::Unknown && req.writes && limited {
        return Err(Denial::new(
            code,
            format!(
                "{path} is {what}; with order or withdrawal limits set on this key, only GET reaches one (keygate could not check the limits)"
            ),
        ));
    }
    Ok(())
}

/// Seconds until the calendar window containing `now` ends (at least 1).
pub(crate) fn secs_to_window_end(now: DateTime<Utc>, window_secs: u32) -> u64 {
    let into = match window_secs {
        60 => now.second(),
        3600 => now.minute() * 60 + now.second(),
        _ => now.num_seconds_from_midnight(),
    };
    u64::from(window_secs.saturating_sub(into).max(1))
}

fn check_rates(
    limits: &Limits,
    c: &Counters,
    conn: &ConnectionRates,
    now: DateTime<Utc>,
) -> Result<(), Denial> {
    const KEY: &str = "request limit";
    const CONNECTION: &str = "this connection's request limit";
    let windows = [
        (
            limits.max_requests_per_minute,
            c.requests_this_minute,
            60,
            "minute",
            KEY,
        ),
        (
            limits.max_requests_per_hour,
            c.requests_this_hour,
            3600,
            "hour",
            KEY,
        ),
        (
            limits.max_requests_per_day,
            c.requests_today,
            86_400,
            "day (UTC)",
            KEY,
        ),
        (
            conn.max_per_minute,
            conn.this_minute,
            60,
            "minute",
            CONNECTION,
        ),
        (conn.max_per_hour, conn.this_hour, 3600, "hour", CONNECTION),
        (
            conn.max_per_day,
            conn.today,
            86_400,
            "day (UTC)",
            CONNECTION,
        ),
    ];
    let mut worst: Option<(u64, &str, u32, &str)> = None;
    for (limit, used, secs, name, scope) in windows {
        let Some(limit) = limit else { continue };
        if u64::from(used) + 1 > u64::from(limit) {
            let retry = secs_to_window_end(now, secs);
            if worst.is_none_or(|(r, _, _, _)| retry > r) {
                worst = Some((retry, name, limit, scope));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((retry, name, limit, scope)) => {
            let mut d = Denial::new(
                DenyCode::RateLimited,
                format!("{scope} of {limit} per {name} reached"),
            );
            d.retry_after_secs = Some(retry);
            Err(d)
        }
    }
}

fn overflow() -> Denial {
    Denial::new(
        DenyCode::ValueOutOfRange,
        "an amount in the request is too large to evaluate",
    )
}

fn positive_or_none(v: Option<Decimal>) -> Option<Decimal> {
    v.filter(|x| *x > Decimal::ZERO)
}

fn is_negative(v: Option<Decimal>) -> bool {
    v.is_some_and(|x| x.is_sign_negative() && !x.is_zero())
}

/// The order's stated price, when the exchange executes the order at that price or better
/// (`price_is_limit`). Any other `price` (a market order's, a stop's trigger, a trailing
/// offset) says nothing about the execution price: such an order is priceless.
fn limit_price(o: &OrderIntent) -> Option<Decimal> {
    positive_or_none(o.price).filter(|_| o.price_is_limit)
}

/// USD notional of an order. `Ok(None)` = cannot be known from the request and prices.
/// When both a base quantity and a quote amount are given, the larger value counts.
///
/// A base quantity is valued at the order's limit price when it has one, else at the base
/// asset's reference price. A buy limit fills at its price or lower, so its price bounds
/// the notional; a sell limit fills at its price or higher, so a sell (or an order of
/// unknown side) is valued at the higher of its price and the reference price.
fn order_notional(o: &OrderIntent, prices: &Prices) -> Result<Option<Decimal>, Denial> {
    let quote_usd = o.quote.as_deref().and_then(|q| prices.usd_price(q));
    let base_usd = o.base.as_deref().and_then(|b| prices.usd_price(b));
    let mut best: Option<Decimal> = None;
    if let Some(qa) = o.quote_amount {
        let Some(u) = quote_usd else { return Ok(None) };
        best = Some(qa.checked_mul(u).ok_or_else(overflow)?);
    }
    if let Some(qty) = o.quantity {
        let base_qty = match o.size_unit {
            SizeUnit::Base => qty,
            SizeUnit::Contracts => match prices.contract_value(&o.symbol) {
                Some(cv) => qty.checked_mul(cv).ok_or_else(overflow)?,
                None => return Ok(None),
            },
        };
        let at_reference = |b: Decimal| base_qty.checked_mul(b).ok_or_else(overflow);
        let usd = if let Some(price) = limit_price(o) {
            let Some(u) = quote_usd else { return Ok(None) };
            let stated = base_qty
                .checked_mul(price)
                .and_then(|v| v.checked_mul(u))
                .ok_or_else(overflow)?;
            match (o.side, base_usd) {
                (Some(Side::Buy), _) => stated,
                // a sell may fill far above its price: without a reference price, the
                // notional is not known
                (_, None) => return Ok(None),
                (_, Some(b)) => stated.max(at_reference(b)?),
            }
        } else {
            // Market (or trigger) order: the base asset's reference price.
            let Some(b) = base_usd else {
                return Ok(None);
            };
            at_reference(b)?
        };
        best = Some(best.map_or(usd, |b| b.max(usd)));
    }
    Ok(best)
}

/// Unsigned base-asset quantity of an order, when it can be known.
///
/// A quote amount converts at the order's limit price when it has one, else at the
/// reference prices. A sell limit fills at its price or higher, so its price bounds the
/// quantity sold; a buy limit fills at its price or lower and may buy more, so a buy (or an
/// order of unknown side) takes the larger of the two conversions when reference prices are
/// known.
fn order_base_qty(o: &OrderIntent, prices: &Prices) -> Result<Option<Decimal>, Denial> {
    if let Some(qty) = o.quantity {
        return match o.size_unit {
            SizeUnit::Base => Ok(Some(qty)),
            SizeUnit::Contracts => match prices.contract_value(&o.symbol) {
                Some(cv) => qty.checked_mul(cv).ok_or_else(overflow).map(Some),
                None => Ok(None),
            },
        };
    }
    let Some(qa) = o.quote_amount else {
        return Ok(None);
    };
    let at_reference = || -> Result<Option<Decimal>, Denial> {
        let base_usd = o.base.as_deref().and_then(|b| prices.usd_price(b));
        let quote_usd = o.quote.as_deref().and_then(|q| prices.usd_price(q));
        match (base_usd, quote_usd) {
            (Some(b), Some(q)) => qa
                .checked_mul(q)
                .and_then(|v| v.checked_div(b))
                .ok_or_else(overflow)
                .map(Some),
            _ => Ok(None),
        }
    };
    let Some(price) = limit_price(o) else {
        return at_reference();
    };
    let stated = qa.checked_div(price).ok_or_else(overflow)?;
    if o.side == Some(Side::Sell) {
        return Ok(Some(stated));
    }
    // a buy may fill below its price and buy more: without reference prices, not known
    Ok(at_reference()?.map(|r| stated.max(r)))
}

fn check_symbol(limits: &Limits, o: &OrderIntent) -> Result<(), Denial> {
    let native = normalize_symbol(&o.symbol);
    let pair = match (&o.base, &o.quote) {
        (Some(b), Some(q)) => Some(normalize_symbol(&format!("{b}{q}"))),
        _ => None,
    };
    let matches = |entry: &String| {
        let e = normalize_symbol(entry);
        !e.is_empty()
            && (e == native
                || pair.as_ref() == Some(&e)
                || o.aliases.iter().any(|a| normalize_symbol(a) == e))
    };
    let shown = for_message(&o.symbol, 64);
    if limits.blocked_symbols.iter().any(matches) {
        return Err(Denial::new(
            DenyCode::SymbolBlocked,
            format!("symbol {shown} is blocked"),
        ));
    }
    if let Some(allowed) = &limits.allowed_symbols {
        if !allowed.iter().any(matches) {
            return Err(Denial::new(
                DenyCode::SymbolNotAllowed,
                format!("symbol {shown} is not in the allowed symbols"),
            ));
        }
    }
    Ok(())
}

fn check_orders(p: &Policy, orders: &[OrderIntent]) -> Result<Vec<OrderApproval>, Denial> {
    let l = &p.limits;
    let mut out = Vec::with_capacity(orders.len());
    let mut volume = Decimal::ZERO;
    // Whether any order of the batch adds volume (cancels and reduce-only orders do not).
    let mut adds_volume = false;
    // Net position per symbol after the orders of this batch seen so far.
    let mut positions: BTreeMap<String, Decimal> = BTreeMap::new();

    for o in orders {
        let symbol = normalize_symbol(&o.symbol);
        if o.is_cancel {
            // Cancels cannot add exposure: only scope, key, vault, IP and rate apply.
            out.push(OrderApproval {
                symbol,
                notional_usd: None,
                base_quantity: None,
                reduce_only: o.reduce_only,
                is_cancel: true,
            });
            continue;
        }
        if symbol.is_empty() {
            return Err(Denial::new(
                DenyCode::OrderUnparsable,
                "order has no symbol",
            ));
        }
        if is_negative(o.quantity) || is_negative(o.price) || is_negative(o.quote_amount) {
            return Err(Denial::new(
                DenyCode::OrderUnparsable,
                "order quantity, price or quote amount is negative",
            ));
        }
        if o.leverage.is_some_and(|x| x <= Decimal::ZERO) {
            return Err(Denial::new(
                DenyCode::OrderUnparsable,
                "order leverage is not positive",
            ));
        }
        check_symbol(l, o)?;
        if o.borrows && l.max_leverage.is_some() {
            return Err(Denial::new(
                DenyCode::LeverageExceedsLimit,
                "an order that borrows (auto-borrow) is refused while max_leverage is set: its leverage is the margin account's, which keygate cannot tell",
            ));
        }
        if let (Some(lev), Some(max)) = (o.leverage, l.max_leverage) {
            if lev > max {
                return Err(Denial::new(
                    DenyCode::LeverageExceedsLimit,
                    format!("leverage {lev} exceeds the limit of {max}"),
                ));
            }
        }

        let notional = order_notional(o, &p.prices)?;
        let base_qty = order_base_qty(o, &p.prices)?;
        let signed_qty = match (o.side, base_qty) {
            (Some(Side::Buy), Some(q)) => Some(q),
            (Some(Side::Sell), Some(q)) => Some(-q),
            _ => None,
        };
        out.push(OrderApproval {
            symbol: symbol.clone(),
            notional_usd: notional,
            base_quantity: signed_qty,
            reduce_only: o.reduce_only,
            is_cancel: false,
        });
        if o.reduce_only {
            // Reduce-only orders only shrink exposure: exempt from size and loss caps.
            continue;
        }

        if let Some(max) = l.max_daily_loss_usd {
            match p.counters.daily_loss_usd {
                None => {
                    return Err(Denial::new(
                        DenyCode::DailyLossUnknown,
                        "daily loss limit is set but no balance snapshot since 00:00 UTC exists",
                    ))
                }
                Some(loss) if loss >= max => {
                    return Err(Denial::new(
                        DenyCode::DailyLossLimitReached,
                        format!("daily loss limit of {max} USD reached; only reduce-only orders and cancels are allowed"),
                    ))
                }
                Some(_) => {}
            }
        }

        // A leverage change carries no size: nothing to measure against size caps.
        let leverage_change =
            o.quantity.is_none() && o.quote_amount.is_none() && o.leverage.is_some();
        if leverage_change {
            continue;
        }

        let capped_here = l.max_trade_usd.is_some() || l.max_daily_volume_usd.is_some();
        if capped_here || p.caps_elsewhere.volume {
            let Some(n) = notional else {
                return Err(Denial::new(
                    DenyCode::NotionalUnknown,
                    format!(
                        "USD notional of the {} order cannot be determined (missing size, price, reference price or contract value){}",
                        for_message(&o.symbol, 64),
                        if capped_here {
                            ""
                        } else {
                            "; another connection of this key caps daily volume and must count it"
                        }
                    ),
                ));
            };
            if let Some(max) = l.max_trade_usd {
                if n > max {
                    return Err(Denial::new(
                        DenyCode::NotionalExceedsLimit,
                        format!(
                            "order notional {} USD exceeds the limit of {max} USD",
                            n.round_dp(2)
                        ),
                    ));
                }
            }
            volume = volume.checked_add(n).ok_or_else(overflow)?;
            adds_volume = true;
        }

        if let Some(max) = l.max_position_size {
            let Some(q) = signed_qty else {
                return Err(Denial::new(
                    DenyCode::PositionUnknown,
                    "position limit is set but the order's side or base quantity cannot be determined",
                ));
            };
            let cur = match positions.get(&symbol) {
                Some(v) => *v,
                None => p.counters.net_position(&o.symbol),
            };
            let next = cur.checked_add(q).ok_or_else(overflow)?;
            if next.abs() > max {
                return Err(Denial::new(
                    DenyCode::PositionLimitExceeded,
                    format!("net position would be {next}, beyond the limit of {max}"),
                ));
            }
            positions.insert(symbol, next);
        }
    }

    if let (Some(max), true) = (l.max_daily_volume_usd, adds_volume) {
        let total = p
            .counters
            .daily_volume_usd
            .checked_add(volume)
            .ok_or_else(overflow)?;
        if total > max {
            return Err(Denial::new(
                DenyCode::DailyVolumeExceeded,
                format!(
                    "daily volume would reach {} USD, beyond the limit of {max} USD",
                    total.round_dp(2)
                ),
            ));
        }
    }
    Ok(out)
}

fn has_withdrawal_limits(l: &Limits) -> bool {
    l.max_withdrawal_usd_per_tx.is_some()
        || l.max_withdrawal_usd_per_day.is_some()
        || l.max_withdrawal_usd_per_month.is_some()
        || l.withdrawal_address_allowlist.is_some()
}

fn check_withdrawal(p: &Policy, w: &WithdrawalIntent) -> Result<Option<Decimal>, Denial> {
    let l = &p.limits;
    if w.amount <= Decimal::ZERO || w.asset.trim().is_empty() || w.address.trim().is_empty() {
        return Err(Denial::new(
            DenyCode::WithdrawalUnparsable,
            "withdrawal needs a positive amount, an asset and an address",
        ));
    }
    if let Some(list) = &l.withdrawal_address_allowlist {
        let mut named = list
            .iter()
            .filter(|a| a.names(&w.address, w.tag.as_deref()))
            .peekable();
        if named.peek().is_none() {
            return Err(Denial::new(
                DenyCode::WithdrawalAddressNotAllowed,
                "destination address is not in the withdrawal allowlist",
            ));
        }
        if !named.any(|a| a.allows_network(w.network.as_deref())) {
            return Err(Denial::new(
                DenyCode::WithdrawalAddressNotAllowed,
                match nonempty(w.network.as_deref()) {
                    Some(n) => format!(
                        "destination address is in the withdrawal allowlist, but not on network {}",
                        for_message(n, 32)
                    ),
                    None => "destination address is in the withdrawal allowlist for a named \
                             network only, and the withdrawal names none"
                        .to_string(),
                },
            ));
        }
    }
    let usd = match p.prices.usd_price(&w.asset) {
        Some(price) => Some(w.amount.checked_mul(price).ok_or_else(overflow)?),
        None => None,
    };
    let caps = [
        l.max_withdrawal_usd_per_tx,
        l.max_withdrawal_usd_per_day,
        l.max_withdrawal_usd_per_month,
    ];
    let capped_here = caps.iter().any(Option::is_some);
    if !capped_here && !p.caps_elsewhere.withdrawals {
        return Ok(usd);
    }
    let Some(v) = usd else {
        return Err(Denial::new(
            DenyCode::WithdrawalValueUnknown,
            format!(
                "no USD reference price for {}; withdrawal caps {}cannot be checked",
                for_message(&w.asset, 16),
                if capped_here {
                    ""
                } else {
                    "on another connection of this key "
                }
            ),
        ));
    };
    if let Some(max) = l.max_withdrawal_usd_per_tx {
        if v > max {
            return Err(Denial::new(
                DenyCode::WithdrawalExceedsLimit,
                format!(
                    "withdrawal of {} USD exceeds the per-transaction limit of {max} USD",
                    v.round_dp(2)
                ),
            ));
        }
    }
    if let Some(max) = l.max_withdrawal_usd_per_day {
        let total = p
            .counters
            .withdrawals_today_usd
            .checked_add(v)
            .ok_or_else(overflow)?;
        if total > max {
            return Err(Denial::new(
                DenyCode::WithdrawalDailyLimitExceeded,
                format!(
                    "withdrawals today would reach {} USD, beyond the limit of {max} USD",
                    total.round_dp(2)
                ),
            ));
        }
    }
    if let Some(max) = l.max_withdrawal_usd_per_month {
        let total = p
            .counters
            .withdrawals_this_month_usd
            .checked_add(v)
            .ok_or_else(overflow)?;
        if total > max {
            return Err(Denial::new(
                DenyCode::WithdrawalMonthlyLimitExceeded,
                format!(
                    "withdrawals this month would reach {} USD, beyond the limit of {max} USD",
                    total.round_dp(2)
                ),
            ));
        }
    }
    Ok(Some(v))
}

/// Caller-supplied text for a detail message: printable ASCII only, bounded length.
fn for_message(s: &str, max: usize) -> String {
    let s = s.split('?').next().unwrap_or_default();
    let mut out: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push_str("...");
    }
    out
}
