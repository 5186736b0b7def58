//! The outcome of a policy decision.

use keygate_exchanges::EndpointClass;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Allow (with the proof the signer requires) or deny (with the rule that denied).
#[derive(Debug)]
#[must_use]
pub enum Decision {
    Allow(PolicyApproved),
    Deny(Denial),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Decision::Deny(d) => Some(d),
            Decision::Allow(_) => None,
        }
    }

    pub fn into_result(self) -> Result<PolicyApproved, Denial> {
        match self {
            Decision::Allow(a) => Ok(a),
            Decision::Deny(d) => Err(d),
        }
    }
}

/// Proof that `evaluate` allowed one call. Only this crate can construct it (its fields
/// are private and it has no public constructor), so requiring it in the signer makes
/// "policy first" a compile-time fact. Not `Clone`: one decision, one call.
///
/// It also carries what the server must persist after forwarding: the USD notional of each
/// order (daily volume) and the USD value of a withdrawal (daily/monthly totals).
#[derive(Debug, PartialEq)]
pub struct PolicyApproved {
    pub(crate) class: EndpointClass,
    pub(crate) signed: bool,
    pub(crate) orders: Vec<OrderApproval>,
    pub(crate) withdrawal_usd: Option<Decimal>,
}

impl PolicyApproved {
    /// The endpoint class the decision was made for.
    pub fn class(&self) -> EndpointClass {
        self.class
    }

    /// False for public calls: they are forwarded without a signature (any client auth
    /// stripped), and the signer must refuse a proof whose `may_sign()` is false.
    pub fn may_sign(&self) -> bool {
        self.signed
    }

    /// One entry per order of the request, in request order.
    pub fn orders(&self) -> &[OrderApproval] {
        &self.orders
    }

    /// Sum of the known order notionals that count toward daily volume (non-cancel,
    /// non-reduce-only); `None` only if the sum overflows. An order of unknown notional
    /// adds nothing: under a volume or trade cap it is refused (`notional_unknown`), except
    /// a leverage change, which has no size, so the sum is what the caps measured. (It was
    /// all or nothing: one leverage entry in a batch made the whole batch count 0.)
    pub fn volume_usd(&self) -> Option<Decimal> {
        let mut sum = Decimal::ZERO;
        for o in self.orders.iter().filter(|o| o.counts_toward_volume()) {
            if let Some(n) = o.notional_usd {
                sum = sum.checked_add(n)?;
            }
        }
        Some(sum)
    }

    /// USD value of the withdrawal, when the call is one and the value is known.
    pub fn withdrawal_usd(&self) -> Option<Decimal> {
        self.withdrawal_usd
    }
}

/// What policy computed about one approved order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderApproval {
    /// [`crate::normalize_symbol`] of the exchange symbol.
    pub symbol: String,
    /// Notional in USD, when it could be computed.
    pub notional_usd: Option<Decimal>,
    /// Signed base-asset quantity (buy positive), when it could be computed.
    pub base_quantity: Option<Decimal>,
    pub reduce_only: bool,
    pub is_cancel: bool,
}

impl OrderApproval {
    pub fn counts_toward_volume(&self) -> bool {
        !self.is_cancel && !self.reduce_only
    }
}

/// Why a call was denied: a stable code, a human detail (never secrets) and the HTTP
/// status the server should answer with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub code: DenyCode,
    pub detail: String,
    /// Seconds until the window that denied the call rolls over (rate limits).
    pub retry_after_secs: Option<u64>,
    /// 403, or 429 for `rate_limited`.
    pub status: u16,
}

impl Denial {
    pub(crate) fn new(code: DenyCode, detail: impl Into<String>) -> Self {
        Denial {
            code,
            detail: detail.into(),
            retry_after_secs: None,
            status: code.status(),
        }
    }
}

/// The rule that denied a call. `as_str()` values are stable problem `code`s
/// (DESIGN.md §7 "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DenyCode {
    ScopeDenied,
    EndpointUnknown,
    EndpointManageDenied,
    CredentialSuspended,
    CredentialRevoked,
    CredentialExpired,
    CredentialPending,
    VaultLocked,
    IpNotAllowed,
    SymbolNotAllowed,
    SymbolBlocked,
    NotionalExceedsLimit,
    NotionalUnknown,
    DailyVolumeExceeded,
    LeverageExceedsLimit,
    PositionLimitExceeded,
    /// `max_position_size` set but the order's side or base quantity cannot be known.
    PositionUnknown,
    DailyLossLimitReached,
    /// `max_daily_loss_usd` set but no balance snapshot since 00:00 UTC exists.
    DailyLossUnknown,
    WithdrawalExceedsLimit,
    WithdrawalDailyLimitExceeded,
    WithdrawalMonthlyLimitExceeded,
    WithdrawalAddressNotAllowed,
    /// A withdrawal cap is set but the asset has no USD reference price.
    WithdrawalValueUnknown,
    /// A withdraw-class call whose withdrawal could not be read (or is malformed).
    WithdrawalUnparsable,
    /// A transfer-class call whose transfer could not be read (or is malformed).
    TransferUnparsable,
    RateLimited,
    OrderUnparsable,
    /// A request keygate cannot be sure the exchange reads as it does: a path with
    /// encoded or dot segments, several `Content-Type` headers (server-side check).
    RequestMalformed,
    /// An amount so large that computing with it overflows.
    ValueOutOfRange,
    /// The connection is disabled by its owner (server-side check).
    ConnectionDisabled,
    /// The exchange's own rate limit for this key is used up; keygate answers instead of
    /// letting the exchange ban the key or IP (server-side check).
    ExchangeRateLimited,
    /// Counters or stored limits needed for a decision could not be read: deny, never guess
    /// (server-side check).
    CountersUnavailable,
}

impl DenyCode {
    pub const ALL: [DenyCode; 33] = [
        DenyCode::ScopeDenied,
        DenyCode::EndpointUnknown,
        DenyCode::EndpointManageDenied,
        DenyCode::CredentialSuspended,
        DenyCode::CredentialRevoked,
        DenyCode::CredentialExpired,
        DenyCode::CredentialPending,
        DenyCode::VaultLocked,
        DenyCode::IpNotAllowed,
        DenyCode::SymbolNotAllowed,
        DenyCode::SymbolBlocked,
        DenyCode::NotionalExceedsLimit,
        DenyCode::NotionalUnknown,
        DenyCode::DailyVolumeExceeded,
        DenyCode::LeverageExceedsLimit,
        DenyCode::PositionLimitExceeded,
        DenyCode::PositionUnknown,
        DenyCode::DailyLossLimitReached,
        DenyCode::DailyLossUnknown,
        DenyCode::WithdrawalExceedsLimit,
        DenyCode::WithdrawalDailyLimitExceeded,
        DenyCode::WithdrawalMonthlyLimitExceeded,
        DenyCode::WithdrawalAddressNotAllowed,
        DenyCode::WithdrawalValueUnknown,
        DenyCode::WithdrawalUnparsable,
        DenyCode::TransferUnparsable,
        DenyCode::RateLimited,
        DenyCode::OrderUnparsable,
        DenyCode::RequestMalformed,
        DenyCode::ValueOutOfRange,
        DenyCode::ConnectionDisabled,
        DenyCode::ExchangeRateLimited,
        DenyCode::CountersUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::ScopeDenied => "scope_denied",
            DenyCode::EndpointUnknown => "endpoint_unknown",
            DenyCode::EndpointManageDenied => "endpoint_manage_denied",
            DenyCode::CredentialSuspended => "credential_suspended",
            DenyCode::CredentialRevoked => "credential_revoked",
            DenyCode::CredentialExpired => "credential_expired",
            DenyCode::CredentialPending => "credential_pending",
            DenyCode::VaultLocked => "vault_locked",
            DenyCode::IpNotAllowed => "ip_not_allowed",
            DenyCode::SymbolNotAllowed => "symbol_not_allowed",
            DenyCode::SymbolBlocked => "symbol_blocked",
            DenyCode::NotionalExceedsLimit => "notional_exceeds_limit",
            DenyCode::NotionalUnknown => "notional_unknown",
            DenyCode::DailyVolumeExceeded => "daily_volume_exceeded",
            DenyCode::LeverageExceedsLimit => "leverage_exceeds_limit",
            DenyCode::PositionLimitExceeded => "position_limit_exceeded",
            DenyCode::PositionUnknown => "position_unknown",
            DenyCode::DailyLossLimitReached => "daily_loss_limit_reached",
            DenyCode::DailyLossUnknown => "daily_loss_unknown",
            DenyCode::WithdrawalExceedsLimit => "withdrawal_exceeds_limit",
            DenyCode::WithdrawalDailyLimitExceeded => "withdrawal_daily_limit_exceeded",
            DenyCode::WithdrawalMonthlyLimitExceeded => "withdrawal_monthly_limit_exceeded",
            DenyCode::WithdrawalAddressNotAllowed => "withdrawal_address_not_allowed",
            DenyCode::WithdrawalValueUnknown => "withdrawal_value_unknown",
            DenyCode::WithdrawalUnparsable => "withdrawal_unparsable",
            DenyCode::RateLimited => "rate_limited",
            DenyCode::OrderUnparsable => "order_unparsable",
            DenyCode::TransferUnparsable => "transfer_unparsable",
            DenyCode::RequestMalformed => "request_malformed",
            DenyCode::ValueOutOfRange => "value_out_of_range",
            DenyCode::ConnectionDisabled => "connection_disabled",
            DenyCode::ExchangeRateLimited => "exchange_rate_limited",
            DenyCode::CountersUnavailable => "counters_unavailable",
        }
    }

    /// HTTP status for this code: 429 for rate limits, 503 when facts are unavailable,
    /// 403 otherwise.
    pub fn status(self) -> u16 {
        match self {
            DenyCode::RateLimited | DenyCode::ExchangeRateLimited => 429,
            DenyCode::CountersUnavailable => 503,
            _ => 403,
        }
    }
}

impl std::fmt::Display for DenyCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_snake_case_and_match_serde() {
        let mut seen = std::collections::HashSet::new();
        for c in DenyCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "duplicate {s}");
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{s}\""));
            assert_eq!(c.to_string(), s);
            let want = match c {
                DenyCode::RateLimited | DenyCode::ExchangeRateLimited => 429,
                DenyCode::CountersUnavailable => 503,
                _ => 403,
            };
            assert_eq!(c.status(), want);
        }
    }
}
