//! keygate's policy core: `evaluate(policy, request, now) -> Decision`.
//!
//! Pure: no clock, database, I/O or randomness. The server gathers every fact (effective
//! scopes and limits, key and vault state, caller IP, spent counters, reference prices,
//! contract values) into a [`Policy`] and a [`CallRequest`] and asks [`evaluate`].
//! Only [`evaluate`] mints [`PolicyApproved`], which the signer requires.
//!
//! # API
//! - [`evaluate`], [`Policy`], [`CallRequest`], [`Decision`] (`Allow(PolicyApproved)` |
//!   `Deny(Denial)`), [`Denial`] `{ code, detail, retry_after_secs, status }`, [`DenyCode`]
//!   (`as_str()` = stable problem code, `status()`), [`OrderApproval`].
//! - [`Scope`], [`ScopeSet`], [`scopes_for_connection`].
//! - [`Limits`] (`merge_stricter`, `validate` -> [`FieldError`]s).
//! - [`KeyState`]/[`KeyStatus`], [`VaultState`], [`Counters`], [`ConnectionRates`],
//!   [`Prices`].
//! - [`normalize_symbol`], [`same_address`], [`USD_STABLECOINS`].
//!
//! # Rules (fail closed: anything unknown while a limit needs it denies)
//! 1. **Public** call without an intent: only the IP allowlist applies (it is not signed:
//!    [`PolicyApproved::may_sign`] is false). Everything else runs all steps below.
//! 2. **Key**: revoked/suspended/pending/expired status deny; `expires_at <= now` is
//!    `credential_expired`; a `rotating` version signs only while `now <
//!    grace_period_ends_at` (no grace end = ended), else `credential_revoked`.
//! 3. **Vault** locked -> `vault_locked`.
//! 4. **IP** allowlist (CIDR; IPv4-mapped IPv6 clients match IPv4 blocks; empty list = none).
//! 5. **Endpoint**: class read/trade/withdraw/transfer/sub_account needs that scope;
//!    `manage` and `unknown` need their flag *and every scope* (they may do anything,
//!    even create a withdrawal-enabled key). The intent's scope is required too (orders ->
//!    trade, withdrawal -> withdraw, transfer -> transfer), whatever the class.
//! 6. **Rates**: calendar-aligned UTC windows (minute, hour, day). `used + 1 > limit` ->
//!    429 `rate_limited`, `retry_after_secs` = seconds to the end of the longest exceeded
//!    window. The caller supplies counts for the windows containing `now`. The caps in
//!    [`Limits`] count every call of the key; a connection's own caps
//!    ([`ConnectionRates`]) count only the calls made through it.
//! 7. **Orders** (each order of a batch; cancels skip all of this):
//!    symbol lists (blocked wins; native symbol or `base+quote` may match) -> leverage ->
//!    *(reduce-only stops here)* -> daily loss (`None` loss = no snapshot ->
//!    `daily_loss_unknown`; `loss >= cap` -> `daily_loss_limit_reached`) -> *(a pure
//!    leverage change, no size, stops here)* -> notional (`max_trade_usd`) -> position
//!    (`|net + batch so far + signed qty| > cap`); then daily volume on the batch sum.
//! 8. **Withdrawal**: well-formed -> address allowlist -> USD value (stablecoins 1:1,
//!    else reference price; unknown with a cap -> `withdrawal_value_unknown`) -> per
//!    tx/day/month. A withdraw-class call without a parsed withdrawal is denied while any
//!    withdrawal limit is set. Overflow anywhere -> `value_out_of_range`.

#![forbid(unsafe_code)]
#![deny(missing_debug_implementations)]

mod decision;
mod destination;
mod evaluate;
mod limits;
mod scope;
mod state;
mod symbol;

pub use decision::{Decision, Denial, DenyCode, OrderApproval, PolicyApproved};
pub use destination::AllowedDestination;
pub use evaluate::{evaluate, CallRequest, Policy};
pub use limits::{FieldError, Limits, MAX_SPEND_CAP_USD};
pub use scope::{scopes_for_connection, Scope, ScopeSet};
pub use state::{
    CapsElsewhere, ConnectionRates, Counters, KeyState, KeyStatus, Prices, VaultState,
};
pub use symbol::{normalize_symbol, same_address, USD_STABLECOINS};

#[cfg(test)]
mod tests;
