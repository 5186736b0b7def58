//! The exchange's own rate limits per key, learned from response headers. When the last
//! answer says a budget has less left than a call weighs (or the exchange answered 429/418
//! with a `Retry-After`), keygate answers 429 itself until the window resets, instead of
//! letting the exchange ban the key or the IP: several bots sharing one key are the usual
//! cause. Each call is charged its weight in every budget the exchange counts it against
//! (`Exchange::request_cost`: Binance's request weight per endpoint and its order counts,
//! KuCoin's resource pools, Bybit's, Bitget's and Gate's budget per endpoint). Where the
//! exchange counts per source IP (Binance's request weight and its 418 bans, KuCoin's
//! public pool), the budget belongs to the exchange host, and every key reached through it
//! shares it. Bans and used-up budgets are shared with the other instances on the same
//! database (`upstream_blocks`, [`UpstreamLimits::share`]).

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use http::{HeaderMap, Method};
use keygate_exchanges::{Budget, RateLimitStatus};
use keygate_policy::{Denial, DenyCode};
use keygate_storage::{DbTime, Store, UpstreamBlock};
use parking_lot::Mutex;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
struct Window {
    /// What is left, in the budget's weight.
    remaining: u64,
    /// The budget's limit, when the exchange reports or documents it.
    limit: Option<u64>,
    /// When the window resets (ms since the epoch).
    reset_at_ms: i64,
}

#[derive(Debug, Default)]
struct Key {
    /// What is known of the current window.
    window: Option<Window>,
    /// Weight let through [`UpstreamLimits::check`] so far (kept across windows; lost only
    /// if the budget is dropped to make room, [`MAX_BUDGETS`]): an answer is
    /// read against the calls sent after its own.
    sent: u64,
    /// Weight of this instance's calls near the end that were let through [`check`] and
    /// have not yet taken it from the shared pool ([`UpstreamLimits::take_shared`]): what
    /// this instance tells the pool is left counts them as not yet spent, since the pool
    /// has not counted them either.
    ///
    /// [`check`]: UpstreamLimits::check
    pending: Pending,
}

/// Weight pending for one window's pool (named by [`grid_end`]); a count for another
/// window is no count for this one.
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    window_end: i64,
    weight: u64,
}

impl Pending {
    /// What is pending in the window ending at `end`.
    fn of(&self, end: i64) -> u64 {
        if self.window_end == end {
            self.weight
        } else {
            0
        }
    }
}

/// Whose budgets a window is: one key's, or (where the exchange counts per source IP) those
/// of every key keygate reaches the exchange host with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Key(Uuid),
    Host(String),
}

impl Scope {
    /// How the scope is named in `upstream_blocks`: `host:<host>` or `key:<credential>`.
    pub fn stored(&self) -> String {
        match self {
            Scope::Key(id) => format!("key:{id}"),
            Scope::Host(h) => format!("host:{h}"),
        }
    }

    /// The scope named `stored`, as [`Scope::stored`] writes it.
    pub fn from_stored(stored: &str) -> Option<Scope> {
        if let Some(h) = stored.strip_prefix("host:") {
            return Some(Scope::Host(h.to_string()));
        }
        stored
            .strip_prefix("key:")
            .and_then(|id| id.parse().ok())
            .map(Scope::Key)
    }

    /// The scope of a call with `credential` to `host`, for a budget counted per IP
    /// (`per_ip`) or per key.
    pub fn of(per_ip: bool, credential: Uuid, host: &str) -> Scope {
        if per_ip {
            Scope::Host(host.to_string())
        } else {
            Scope::Key(credential)
        }
    }
}

/// One scope's state: the exchange's own block, and its budgets by name.
#[derive(Debug, Default)]
struct Scoped {
    /// Set by the exchange's refusal (429 / 418): until then (ms since the epoch) every
    /// call in the scope is held, whatever an answer says.
    blocked_until_ms: i64,
    budgets: HashMap<String, Key>,
}

/// Budgets kept per scope. Budgets are named by the exchange modules' tables, so this is a
/// safety net: past it, budgets whose window has ended are dropped, and a call charged in
/// a new one is held until there is room.
const MAX_BUDGETS: usize = 256;

#[derive(Default)]
pub struct UpstreamLimits {
    /// Whether other instances may call with the same keys (PostgreSQL): near a budget's
    /// end, calls take their weight from a pool every instance shares
    /// ([`UpstreamLimits::take_shared`]).
    shared: bool,
    by_scope: Mutex<HashMap<Scope, Scoped>>,
    /// Blocks, and budgets the exchange reported used up, learned here from its answers
    /// and not yet shared with the other instances ([`UpstreamLimits::share`]), by what
    /// they hold (a scope, or one budget of it) with the instant they end.
    unshared: Mutex<HashMap<Held, i64>>,
}

/// What a shared row holds: every call in a scope (the exchange's ban), or the calls
/// charged in one budget of it (the exchange reported it used up). Stored as the scope's
/// name ([`Scope::stored`]), with `#` and the budget's name for a budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Held {
    Scope(Scope),
    Budget(Scope, String),
}

impl Held {
    fn stored(&self) -> String {
        match self {
            Held::Scope(s) => s.stored(),
            Held::Budget(s, name) => format!("{}#{name}", s.stored()),
        }
    }

    fn from_stored(stored: &str) -> Option<Held> {
        match stored.split_once('#') {
            Some((scope, name)) => Some(Held::Budget(Scope::from_stored(scope)?, name.to_string())),
            None => Scope::from_stored(stored).map(Held::Scope),
        }
    }
}

/// The longest an exchange block read from `upstream_blocks` holds, counted from the row's
/// last write: as long as the longest `Retry-After` keygate takes on.
const MAX_STORED_BLOCK: chrono::Duration = chrono::Duration::hours(1);
/// The longest a used-up budget read from `upstream_blocks` holds: the longest window
/// (Binance's orders per day).
const MAX_STORED_WINDOW: chrono::Duration = chrono::Duration::days(1);

/// The furthest ahead an exchange's reset time is believed: longer than any window whose
/// end an exchange reports (Bybit's and Gate's are seconds).
const MAX_RESET_AHEAD_MS: i64 = 5 * 60_000;

/// How far apart answers about one window may put its end when the exchange reports it as
/// a countdown: the spread of their travel times.
const COUNTDOWN_FUZZ_MS: i64 = 1_000;

/// How often an instance shares the blocks it learned and reads the others'.
pub const SHARE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What one call is charged in one of the exchange's budgets, and whose budget it is.
#[derive(Debug, Clone)]
pub struct Placed {
    pub scope: Scope,
    pub budget: Budget,
    pub weight: u64,
}

/// What one call is charged, and where the exchange's refusal for rate would hold.
#[derive(Debug, Clone)]
pub struct Charges {
    placed: Vec<Placed>,
    /// The scope a 429 / 418 blocks: the host's where the exchange bans per source IP,
    /// whichever budget the call was charged in, or where the call counted only there.
    block: Scope,
    /// The call counted only in budgets per source IP, at an exchange that otherwise
    /// counts per key: its 429 holds the address, `Retry-After` or not.
    public_only: bool,
}

/// What `req` with `credential` to `host` of `api` is charged.
pub fn charges(
    api: &dyn keygate_exchanges::Exchange,
    credential: Uuid,
    host: &str,
    req: &keygate_exchanges::OutgoingRequest,
) -> Charges {
    let placed: Vec<Placed> = api
        .request_cost(req)
        .into_iter()
        .map(|c| Placed {
            scope: Scope::of(c.budget.per_ip, credential, host),
            budget: c.budget,
            weight: c.weight,
        })
        .collect();
    // a call counted only per source IP (a public call to KuCoin, Bybit, Bitget or
    // Gate): a refusal for rate is the address's, whatever the exchange does for keys
    let public_only =
        !api.limits_per_ip() && !placed.is_empty() && placed.iter().all(|p| p.budget.per_ip);
    Charges {
        placed,
        block: Scope::of(api.limits_per_ip() || public_only, credential, host),
        public_only,
    }
}

/// A call let through [`UpstreamLimits::check`]: its place among each budget's calls (in
/// the order of its charges), to hand back to
/// [`UpstreamLimits::learn`] with its answer.
#[derive(Debug, Clone)]
pub struct Ticket {
    at: Vec<u64>,
    /// When the call was let through: the window it counts in, where the exchange
    /// reports no reset of its own.
    sent: DateTime<Utc>,
    /// The budgets charged near their end, whose weight must also come from the pool the
    /// instances share ([`UpstreamLimits::take_shared`]).
    edge: Vec<Edge>,
}

/// A budget a call was charged in near the end of its window, on a database several
/// instances share: what this instance knew was left before the call, and its weight.
#[derive(Debug, Clone)]
struct Edge {
    scope: Scope,
    budget: String,
    /// The budget's window length and the end of the window the call counts in.
    window_ms: i64,
    reset_at_ms: i64,
    /// What this instance knew was left before the call, its own calls near the end not
    /// yet taken from the pool counted as left (the pool has not counted them either).
    left: u64,
    weight: u64,
}

impl Edge {
    /// The shared pool's name and window (its end in seconds, [`grid_end`]).
    fn pool(&self) -> (String, i64) {
        (
            format!("up:{}#{}", self.scope.stored(), self.budget),
            self.window_end().div_euclid(1000),
        )
    }

    fn window_end(&self) -> i64 {
        grid_end(self.reset_at_ms, self.window_ms)
    }
}

/// A window's end rounded to the budget's window length: instances whose estimates of the
/// end differ by an answer's travel time (KuCoin's countdown), or an instance whose
/// estimate moved a little later, still name one window. Two estimates either side of a
/// half-window point still name two: the pools then err towards holding.
fn grid_end(reset_at_ms: i64, window_ms: i64) -> i64 {
    let w = window_ms.max(1000);
    (reset_at_ms + w / 2).div_euclid(w) * w
}

/// Below this much left (a fifth of the limit, or five calls of this weight, whichever is
/// more), a call is near its budget's end: the other instances' calls since this one's
/// last answer could use up the rest, so every instance takes from one shared pool.
fn edge_below(limit: Option<u64>, weight: u64) -> u64 {
    limit.map_or(0, |l| l / 5).max(weight.saturating_mul(5))
}

impl UpstreamLimits {
    /// Limits for an instance that may share keys with others on its database (`shared`:
    /// PostgreSQL), or that alone calls with them (SQLite).
    pub fn new(shared: bool) -> UpstreamLimits {
        UpstreamLimits {
            shared,
            ..Default::default()
        }
    }

    /// Learns from `rl`, the answer about `budget` of `scope` to the call whose place in
    /// it is `at`. The exchange counted that call and those before it, not the calls sent
    /// after it that are still on their way: their weight is taken off what the answer
    /// reports. So answers arriving out of order (several bots share a key) never give
    /// back budget that calls in flight will use, and a late one cannot lift the
    /// exchange's own block: it stands until it ends.
    fn observe(
        &self,
        scope: &Scope,
        budget: &Budget,
        rl: &RateLimitStatus,
        (sent, now): (DateTime<Utc>, DateTime<Utc>),
        at: u64,
    ) {
        let Some(reported) = rl.left() else {
            return;
        };
        let now_ms = now.timestamp_millis();
        let sent_ms = sent.timestamp_millis();
        let window_ms = budget.window_ms.max(1);
        // A countdown (KuCoin) gives the reset only as well as the answer's travel time:
        // answers about one window land up to that far apart.
        let mut fuzz = 0;
        // a reset already past is about a window that ended; one further off than any
        // window keygate tracks is not believed (it would outlast every later answer)
        if rl.reset_at_ms.is_some_and(|r| r <= now_ms) {
            return;
        }
        let reset_at_ms = rl
            .reset_at_ms
            .filter(|r| *r <= now_ms.saturating_add(MAX_RESET_AHEAD_MS))
            .or_else(|| {
                let d = rl.reset_in_ms.filter(|d| (1..=window_ms).contains(d))?;
                fuzz = COUNTDOWN_FUZZ_MS;
                Some(now_ms + d)
            })
            // without one, the window the call was sent in: an answer to a call sent at
            // :59.9 that arrives at :00.1 is about the minute that just ended
            .unwrap_or_else(|| sent_ms - sent_ms.rem_euclid(window_ms) + window_ms);
        let mut map = self.by_scope.lock();
        let Some(scoped) = map.get_mut(scope) else {
            return;
        };
        if scoped.blocked_until_ms > now_ms {
            return;
        }
        let Some(key) = scoped.budgets.get_mut(budget.name.as_ref()) else {
            return;
        };
        // an answer about an earlier window (a call that started before the current
        // window began) tells nothing about this one; one about the same window never
        // moves its end earlier
        let reset_at_ms = match key.window {
            Some(w) if reset_at_ms + fuzz < w.reset_at_ms => return,
            Some(w) if reset_at_ms < w.reset_at_ms => w.reset_at_ms,
            _ => reset_at_ms,
        };
        let in_flight = key.sent.saturating_sub(at);
        key.window = Some(Window {
            remaining: reported.saturating_sub(in_flight),
            limit: rl.limit,
            reset_at_ms,
        });
        drop(map);
        // the exchange says nothing is left: the other instances hold these calls too,
        // unless the window ends before they could read it
        if reported == 0 && reset_at_ms > now_ms + 2 * SHARE_EVERY.as_millis() as i64 {
            self.unshare(
                Held::Budget(scope.clone(), budget.name.to_string()),
                reset_at_ms,
            );
        }
    }

    /// Notes `held` until `until_ms`, to be shared at the next round.
    fn unshare(&self, held: Held, until_ms: i64) {
        let mut unshared = self.unshared.lock();
        let e = unshared.entry(held).or_insert(until_ms);
        *e = (*e).max(until_ms);
    }

    /// Holds the calls charged in budget `name` of `scope` until `until_ms`, unless a later
    /// window of it is known already (an end within [`COUNTDOWN_FUZZ_MS`] of it is the
    /// same window, seen through another answer's travel time).
    fn exhaust(&self, scope: &Scope, name: &str, until_ms: i64, now_ms: i64) {
        let mut map = self.by_scope.lock();
        let Some(key) = budget_of(scoped(&mut map, scope), name, now_ms) else {
            return;
        };
        match key.window {
            Some(w) if w.reset_at_ms > until_ms + COUNTDOWN_FUZZ_MS => {}
            Some(w) => {
                key.window = Some(Window {
                    remaining: 0,
                    reset_at_ms: until_ms.max(w.reset_at_ms),
                    ..w
                })
            }
            None => {
                key.window = Some(Window {
                    remaining: 0,
                    limit: None,
                    reset_at_ms: until_ms,
                })
            }
        }
    }

    /// Learns from the exchange's answer (`status`, `headers`, come at `now`) to
    /// `credential`'s `method path` call, charged `charges` and holding `ticket`: the windows its
    /// rate-limit headers report, and its own refusal for rate (429 / 418). Answers the
    /// headers' main rate-limit state, for the call's record.
    #[allow(clippy::too_many_arguments)]
    pub fn learn(
        &self,
        api: &dyn keygate_exchanges::Exchange,
        charges: &Charges,
        credential: Uuid,
        (method, path): (&Method, &str),
        status: u16,
        headers: &HeaderMap,
        now: DateTime<Utc>,
        ticket: &Ticket,
    ) -> Option<RateLimitStatus> {
        for (budget, rl) in api.rate_limits(method, path, headers) {
            // a budget the call was not charged in has no place to read the answer from
            let charged = charges
                .placed
                .iter()
                .zip(&ticket.at)
                .find(|(p, _)| p.budget == budget);
            if let Some((p, at)) = charged {
                self.observe(&p.scope, &budget, &rl, (ticket.sent, now), *at);
            }
        }
        let main = api.rate_limit(headers);
        if status == 429 || status == 418 {
            let countdown = main.as_ref().and_then(|r| r.reset_in_ms);
            if charges.public_only {
                self.block(
                    &charges.block,
                    now.timestamp_millis() + ban_ms(headers, countdown),
                );
            } else {
                self.blocked_by_exchange(
                    &charges.block,
                    credential,
                    status,
                    headers,
                    now,
                    countdown,
                );
            }
        }
        main
    }

    /// The exchange itself refused `credential`'s call for rate (429 / 418): block until
    /// its `Retry-After`. Where limits are per source IP, an IP ban (418) or a refusal
    /// with a `Retry-After` (Binance's for request weight) blocks the host's scope; a 429
    /// without one is the account's own order-rate limit and blocks that key only, so one
    /// tenant's orders cannot stop everyone's calls. Without a `Retry-After`, the block
    /// lasts until the window's reset countdown (`countdown_ms`, KuCoin's) ends, or a
    /// minute.
    pub fn blocked_by_exchange(
        &self,
        scope: &Scope,
        credential: Uuid,
        status: u16,
        headers: &HeaderMap,
        now: DateTime<Utc>,
        countdown_ms: Option<i64>,
    ) {
        let key_only = Scope::Key(credential);
        let scope = match scope {
            Scope::Host(_) if status != 418 && !headers.contains_key(http::header::RETRY_AFTER) => {
                &key_only
            }
            s => s,
        };
        self.block(
            scope,
            now.timestamp_millis() + ban_ms(headers, countdown_ms),
        );
    }

    /// The exchange refused calls in `scope` until `until_ms`: held here, and shared.
    fn block(&self, scope: &Scope, until_ms: i64) {
        self.hold(scope, until_ms);
        self.unshare(Held::Scope(scope.clone()), until_ms);
    }

    /// Holds every call in `scope` until `until_ms`; a shorter block leaves a longer one
    /// already in force.
    fn hold(&self, scope: &Scope, until_ms: i64) {
        let mut map = self.by_scope.lock();
        let scoped = scoped(&mut map, scope);
        scoped.blocked_until_ms = scoped.blocked_until_ms.max(until_ms);
    }

    /// Shares the blocks and used-up budgets learned here since the last round with the
    /// instances on the same database, and takes on theirs: a ban one instance ran into,
    /// or a budget the exchange told it is used up, holds every instance's calls within
    /// about [`SHARE_EVERY`]. A block that cannot be written is kept for the
    /// next round, and the others' are read all the same. A stored block holds for at
    /// most [`MAX_STORED_BLOCK`] past its last write, so a row from an instance with a
    /// wrong clock cannot hold a host for good.
    pub async fn share(&self, store: &Store) -> Result<(), keygate_storage::StorageError> {
        let now = Utc::now();
        let learned: Vec<_> = std::mem::take(&mut *self.unshared.lock())
            .into_iter()
            .collect();
        let mut written = Ok(());
        if !learned.is_empty() {
            let rows: Vec<_> = learned
                .iter()
                .filter_map(|(held, until)| {
                    Utc.timestamp_millis_opt(*until)
                        .single()
                        .map(|t| UpstreamBlock {
                            scope: held.stored(),
                            blocked_until: DbTime::from(t),
                            updated_at: DbTime::from(now),
                        })
                })
                .collect();
            if let Err(e) = store.record_upstream_blocks(&rows, DbTime::from(now)).await {
                for (held, until) in learned {
                    self.unshare(held, until);
                }
                written = Err(e);
            }
        }
        let now_ms = now.timestamp_millis();
        for b in store.upstream_blocks(DbTime::from(now)).await? {
            let bound = |max: chrono::Duration| {
                let last = b.updated_at.0.timestamp_millis() + max.num_milliseconds();
                b.blocked_until.0.timestamp_millis().min(last)
            };
            match Held::from_stored(&b.scope) {
                Some(Held::Scope(scope)) => self.hold(&scope, bound(MAX_STORED_BLOCK)),
                Some(Held::Budget(scope, name)) => {
                    self.exhaust(&scope, &name, bound(MAX_STORED_WINDOW), now_ms)
                }
                None => {}
            }
        }
        written
    }

    /// Charges a retry of the call holding `ticket` (the exchange counts every attempt),
    /// which then holds the retry's place; `false`, and nothing charged, when the retry no
    /// longer fits.
    /// A retry near a budget's end, where its weight would have to come from the shared
    /// pool (which the retry loop does not wait on), is not sent: the exchange's answer
    /// stands.
    pub fn charge_retry(&self, charges: &Charges, credential: Uuid, ticket: &mut Ticket) -> bool {
        match self.charge(charges, credential, Utc::now(), false) {
            Ok(t) => {
                *ticket = t;
                true
            }
            Err(_) => false,
        }
    }

    /// Takes the weight of a call let through near its budgets' end from the pools every
    /// instance on `store` shares (one per budget and window; see
    /// `Store::take_from_pool`). Each instance learns what is left only from the answers
    /// to its own calls, so without this, several instances sharing a key (bots behind a
    /// load balancer) could each spend the end of a budget. What a pool says is left
    /// becomes this instance's count too, when lower. A pool with too little left holds
    /// the call (and, once empty, the other instances' calls through `upstream_blocks`); a
    /// pool that cannot be reached holds it too (fail closed). A call held at a later
    /// budget keeps what it took from an earlier one: the pools err towards holding.
    pub async fn take_shared(
        &self,
        store: &Store,
        ticket: &Ticket,
        now: DateTime<Utc>,
    ) -> Result<(), Denial> {
        if ticket.edge.is_empty() {
            return Ok(());
        }
        // every edge's weight stops being pending however this ends, an early return or
        // the task dropped included: a count left pending would overstate what is left
        let _settle = Settle(self, &ticket.edge);
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let now_ms = now.timestamp_millis();
        for e in &ticket.edge {
            let (bucket, window) = e.pool();
            let (taken, left) = store
                .take_from_pool(&bucket, window, as_i64(e.left), as_i64(e.weight))
                .await
                .map_err(|err| {
                    self.give_back(&ticket.edge);
                    tracing::error!(error = %err, "the exchange rate-limit pool the instances share is unavailable");
                    Denial {
                        code: DenyCode::CountersUnavailable,
                        detail: "the exchange's rate limit is nearly used up, and the count the instances share is unavailable; refusing rather than guessing".into(),
                        retry_after_secs: None,
                        status: DenyCode::CountersUnavailable.status(),
                    }
                })?;
            if !taken {
                // the call does not go out: what it was charged here is given back
                self.give_back(&ticket.edge);
            }
            self.lower(e, u64::try_from(left).unwrap_or(0));
            // the pool is empty: the instances not near the end by their own answers hold
            // these calls too, within about a second
            if left <= 0 && e.reset_at_ms > now_ms + 2 * SHARE_EVERY.as_millis() as i64 {
                self.unshare(
                    Held::Budget(e.scope.clone(), e.budget.clone()),
                    e.reset_at_ms,
                );
            }
            if !taken {
                return Err(refused(&e.scope, e.reset_at_ms - now_ms));
            }
        }
        Ok(())
    }

    /// What the shared pool says is left of `e`'s window, when lower than this
    /// instance's count.
    fn lower(&self, e: &Edge, left: u64) {
        self.with_window(e, |w| w.remaining = w.remaining.min(left));
    }

    /// Gives the weight of a call that does not go out back to its near-end budgets'
    /// windows here, so that what this instance later tells the pools is left is not short
    /// of it. (Its other budgets, far from their end, keep the charge: an answer soon
    /// puts them right.)
    fn give_back(&self, edges: &[Edge]) {
        for e in edges {
            self.with_window(e, |w| w.remaining = w.remaining.saturating_add(e.weight));
        }
    }

    /// Runs `f` on the window of `e`'s budget here, if it is still the window `e` was
    /// charged in.
    fn with_window(&self, e: &Edge, f: impl FnOnce(&mut Window)) {
        let mut map = self.by_scope.lock();
        let Some(key) = map
            .get_mut(&e.scope)
            .and_then(|s| s.budgets.get_mut(e.budget.as_str()))
        else {
            return;
        };
        if let Some(w) = key.window.as_mut() {
            if grid_end(w.reset_at_ms, e.window_ms) == e.window_end() {
                f(w);
            }
        }
    }

    /// A denial when the exchange has blocked `credential` or a scope the call is charged
    /// in, or when a budget's window is known to have less left than the call weighs
    /// there; else the call's [`Ticket`] (the call is charged against what is left). The
    /// ticket must then go through [`UpstreamLimits::take_shared`] before the call goes
    /// out: it settles the weight this marks pending near a budget's end.
    pub fn check(
        &self,
        charges: &Charges,
        credential: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Ticket, Denial> {
        self.charge(charges, credential, now, true)
    }

    /// [`UpstreamLimits::check`]; without `may_pool`, a call that would have to take from
    /// the shared pool is held before anything is charged.
    fn charge(
        &self,
        charges: &Charges,
        credential: Uuid,
        now: DateTime<Utc>,
        may_pool: bool,
    ) -> Result<Ticket, Denial> {
        let placed = &charges.placed;
        let now_ms = now.timestamp_millis();
        let own = Scope::Key(credential);
        let mut map = self.by_scope.lock();
        // the key's own block, the block where the exchange bans (the host's, for Binance,
        // whichever budget the call is weighed in), and those of the scopes charged
        let blocks = [&own, &charges.block];
        for scope in blocks.into_iter().chain(placed.iter().map(|p| &p.scope)) {
            if let Some(s) = map.get(scope) {
                if s.blocked_until_ms > now_ms {
                    return Err(refused(scope, s.blocked_until_ms - now_ms));
                }
            }
        }
        for p in placed {
            let Some(key) = map
                .get_mut(&p.scope)
                .and_then(|s| s.budgets.get_mut(p.budget.name.as_ref()))
            else {
                continue;
            };
            match key.window {
                Some(w) if w.reset_at_ms <= now_ms => key.window = None,
                // nothing left holds every call, weightless ones too; a call heavier than
                // the whole limit waits for a full window, not forever
                Some(w)
                    if w.remaining == 0
                        || w.remaining < p.weight.min(w.limit.unwrap_or(u64::MAX)) =>
                {
                    return Err(refused(&p.scope, w.reset_at_ms - now_ms))
                }
                Some(w) if !may_pool && self.near_end(&w, p.weight) => {
                    return Err(refused(&p.scope, w.reset_at_ms - now_ms))
                }
                _ => {}
            }
        }
        // every budget charged must be tracked, or the call is held
        for p in placed {
            if budget_of(scoped(&mut map, &p.scope), &p.budget.name, now_ms).is_none() {
                return Err(refused(&p.scope, 1_000));
            }
        }
        let mut at = Vec::with_capacity(placed.len());
        let mut edge = Vec::new();
        for p in placed {
            let key = budget_of(scoped(&mut map, &p.scope), &p.budget.name, now_ms)
                .expect("made room above");
            if let Some(w) = key.window.as_mut() {
                if self.near_end(w, p.weight) {
                    // as the check above: a call heavier than the whole limit counts as
                    // the limit
                    let weight = p.weight.min(w.limit.unwrap_or(u64::MAX));
                    let end = grid_end(w.reset_at_ms, p.budget.window_ms);
                    let pending = key.pending.of(end);
                    edge.push(Edge {
                        scope: p.scope.clone(),
                        budget: p.budget.name.to_string(),
                        window_ms: p.budget.window_ms,
                        reset_at_ms: w.reset_at_ms,
                        left: w.remaining.saturating_add(pending),
                        weight,
                    });
                    key.pending = Pending {
                        window_end: end,
                        weight: pending.saturating_add(weight),
                    };
                }
                w.remaining = w.remaining.saturating_sub(p.weight);
            }
            key.sent += p.weight;
            at.push(key.sent);
        }
        Ok(Ticket {
            at,
            sent: now,
            edge,
        })
    }

    /// Whether a call of `weight` in window `w` must also take from the shared pool.
    fn near_end(&self, w: &Window, weight: u64) -> bool {
        self.shared && w.remaining < edge_below(w.limit, weight)
    }
}

/// Ends the pending count of a call's near-end budgets when it is dropped
/// ([`UpstreamLimits::take_shared`]).
struct Settle<'a>(&'a UpstreamLimits, &'a [Edge]);

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        let mut map = self.0.by_scope.lock();
        for e in self.1 {
            if let Some(key) = map
                .get_mut(&e.scope)
                .and_then(|s| s.budgets.get_mut(e.budget.as_str()))
            {
                if key.pending.window_end == e.window_end() {
                    key.pending.weight = key.pending.weight.saturating_sub(e.weight);
                }
            }
        }
    }
}

/// How long an exchange's refusal for rate holds: its `Retry-After`, else the window's
/// reset countdown (KuCoin's), else a minute.
fn ban_ms(headers: &HeaderMap, countdown_ms: Option<i64>) -> i64 {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(|secs| secs.clamp(1, 3600) * 1000)
        .or_else(|| countdown_ms.map(|ms| ms.clamp(1_000, 3_600_000)))
        .unwrap_or(60_000)
}

/// `scope`'s entry, made on first use: the scope (for Binance, the host name) is copied
/// into the map only then, not on every call.
fn scoped<'m>(map: &'m mut HashMap<Scope, Scoped>, scope: &Scope) -> &'m mut Scoped {
    if !map.contains_key(scope) {
        map.insert(scope.clone(), Scoped::default());
    }
    map.get_mut(scope).expect("just inserted")
}

/// Budget `name` of a scope, made on first use; `None` when the scope already keeps
/// [`MAX_BUDGETS`] live ones.
fn budget_of<'s>(scoped: &'s mut Scoped, name: &str, now_ms: i64) -> Option<&'s mut Key> {
    if !scoped.budgets.contains_key(name) {
        if scoped.budgets.len() >= MAX_BUDGETS {
            scoped
                .budgets
                .retain(|_, k| matches!(k.window, Some(w) if w.reset_at_ms > now_ms));
            if scoped.budgets.len() >= MAX_BUDGETS {
                return None;
            }
        }
        scoped.budgets.insert(name.to_string(), Key::default());
    }
    scoped.budgets.get_mut(name)
}

/// The answer to a call held because `scope`'s window is used up for `left_ms` more.
fn refused(scope: &Scope, left_ms: i64) -> Denial {
    let secs = (left_ms.saturating_add(999) / 1000).max(1) as u64;
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

    /// A call charged 1 in `scope`'s one budget.
    fn one(scope: &Scope) -> Charges {
        Charges {
            placed: vec![Placed {
                scope: scope.clone(),
                budget: Budget::whole(matches!(scope, Scope::Host(_))),
                weight: 1,
            }],
            block: scope.clone(),
            public_only: false,
        }
    }

    /// `method path?query`, as the gateway sends it.
    fn req(method: &Method, path: &str, query: Option<&str>) -> keygate_exchanges::OutgoingRequest {
        keygate_exchanges::OutgoingRequest {
            method: method.clone(),
            path: path.to_string(),
            query: query.map(str::to_string),
            headers: HeaderMap::new(),
            body: Default::default(),
        }
    }

    /// The answer `rl` about `scope`'s one budget, to the call holding `ticket`.
    fn observe(
        u: &UpstreamLimits,
        scope: &Scope,
        rl: &RateLimitStatus,
        now: DateTime<Utc>,
        ticket: &Ticket,
    ) {
        u.observe(
            scope,
            &one(scope).placed[0].budget,
            rl,
            (now, now),
            ticket.at[0],
        );
    }

    #[test]
    fn used_up_window_denies_until_reset() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let first = u.check(&one(c), K, t(0)).expect("nothing known: allowed");
        let rl = RateLimitStatus {
            used: Some(6000),
            limit: Some(6000),
            remaining: None,
            reset_at_ms: Some(t(30_000).timestamp_millis()),
            reset_in_ms: None,
        };
        observe(&u, c, &rl, t(0), &first);
        let d = u.check(&one(c), K, t(1_000)).expect_err("used up");
        assert_eq!(d.code, DenyCode::ExchangeRateLimited);
        assert_eq!(d.status, 429);
        assert_eq!(d.retry_after_secs, Some(29));
        assert!(u.check(&one(c), K, t(30_000)).is_ok(), "window reset");
        assert!(
            u.check(&one(&Scope::Key(Uuid::new_v4())), K, t(1_000))
                .is_ok(),
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
        let first = u.check(&one(c), K, t(0)).unwrap();
        observe(&u, c, &rl, t(0), &first);
        assert!(u.check(&one(c), K, t(1)).is_ok());
        assert!(u.check(&one(c), K, t(2)).is_ok());
        assert!(
            u.check(&one(c), K, t(3)).is_err(),
            "two calls spent what was left"
        );
    }

    #[test]
    fn exchange_429_blocks_for_retry_after() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "5".parse().unwrap());
        u.blocked_by_exchange(c, K, 429, &h, t(0), None);
        assert_eq!(
            u.check(&one(c), K, t(1_000)).unwrap_err().retry_after_secs,
            Some(4)
        );
        assert!(u.check(&one(c), K, t(5_000)).is_ok());
    }

    /// A call sent before the block but answered after it (its headers still show budget)
    /// does not lift the block.
    #[test]
    fn a_late_answer_does_not_lift_the_exchanges_block() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let before = u.check(&one(c), K, t(-5)).unwrap();
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "5".parse().unwrap());
        u.blocked_by_exchange(c, K, 429, &h, t(0), None);
        let late = RateLimitStatus {
            remaining: Some(100),
            reset_at_ms: Some(t(60_000).timestamp_millis()),
            ..Default::default()
        };
        observe(&u, c, &late, t(10), &before);
        assert_eq!(
            u.check(&one(c), K, t(1_000)).unwrap_err().retry_after_secs,
            Some(4)
        );
        assert!(
            u.check(&one(c), K, t(5_000)).is_ok(),
            "the block ends on time"
        );

        // a long ban, then a late 429 with a short Retry-After: the ban stands
        h.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
        u.blocked_by_exchange(c, K, 429, &h, t(10_000), None);
        h.insert(http::header::RETRY_AFTER, "1".parse().unwrap());
        u.blocked_by_exchange(c, K, 429, &h, t(9_000), None);
        assert!(u.check(&one(c), K, t(60_000)).is_err(), "still banned");
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
            reset_in_ms: None,
        };
        for i in 0..100 {
            let k = u
                .check(&one(c), K, t(i))
                .unwrap_or_else(|_| panic!("call {i} refused"));
            observe(&u, c, &answer, t(i), &k);
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
        let early = u.check(&one(c), K, t(0)).unwrap();
        observe(&u, c, &at(2, 60_000), t(1), &early);
        let first = u.check(&one(c), K, t(2)).unwrap();
        let two = u.check(&one(c), K, t(3)).unwrap();
        for i in 0..8 {
            assert!(
                u.check(&one(c), K, t(4 + i)).is_err(),
                "bot {i} let through"
            );
        }
        observe(&u, c, &at(1, 60_000), t(20), &first);
        assert!(
            u.check(&one(c), K, t(21)).is_err(),
            "call two is already using the last one"
        );
        observe(&u, c, &at(0, 60_000), t(22), &two);
        // an answer about the window before this one, however much it says is left
        let stale = u.check(&one(c), K, t(-30_000));
        assert!(stale.is_err());
        let before = Ticket {
            at: vec![0],
            sent: t(-30_000),
            edge: Vec::new(),
        };
        observe(&u, c, &at(500, 30_000), t(23), &before);
        assert!(
            u.check(&one(c), K, t(24)).is_err(),
            "a late answer reopened the window"
        );
        assert!(
            u.check(&one(c), K, t(60_000)).is_ok(),
            "the window ends on time"
        );
    }

    /// Where limits are per source IP, an IP ban (418) holds every key sent to the host;
    /// a 429 without `Retry-After` (the account's own order rate) holds that key only.
    #[test]
    fn a_host_ban_holds_every_key_and_an_order_limit_only_its_own() {
        let u = UpstreamLimits::default();
        let host = &Scope::Host("api.binance.com".into());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let none = HeaderMap::new();
        u.blocked_by_exchange(host, a, 429, &none, t(0), None);
        assert!(
            u.check(&one(host), a, t(1)).is_err(),
            "the key that hit its order limit"
        );
        assert!(u.check(&one(host), b, t(1)).is_ok(), "another tenant's key");
        u.blocked_by_exchange(host, b, 418, &none, t(2), None);
        assert!(
            u.check(&one(host), Uuid::new_v4(), t(3)).is_err(),
            "an IP ban holds everyone"
        );
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "5".parse().unwrap());
        let other = &Scope::Host("fapi.binance.com".into());
        u.blocked_by_exchange(other, a, 429, &h, t(0), None);
        assert!(
            u.check(&one(other), b, t(1)).is_err(),
            "weight exceeded: the host's budget"
        );
    }

    /// Binance's answer headers for a call to the spot host, weight used `used`.
    fn binance_weight(used: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-mbx-used-weight-1m", used.to_string().parse().unwrap());
        h
    }

    /// A call is held when it weighs more than is left, not only when nothing is: with 30
    /// of Binance's 6000 left, `/api/v3/account` (20) goes once and the second is held,
    /// while `/api/v3/time` (1) still goes. Counting every call as 1 let 30 account reads
    /// out, 600 weight into a window with 30 left.
    #[test]
    fn a_call_is_held_when_it_weighs_more_than_is_left() {
        let api = keygate_exchanges::ExchangeId::Binance.api();
        let u = UpstreamLimits::default();
        let host = "api.binance.com";
        let (get, account, time) = (Method::GET, "/api/v3/account", "/api/v3/time");
        let acct = charges(api, K, host, &req(&get, account, None));
        assert_eq!(acct.placed[0].weight, 20);
        let first = u.check(&acct, K, t(0)).unwrap();
        u.learn(
            api,
            &acct,
            K,
            (&get, account),
            200,
            &binance_weight(5950),
            t(1),
            &first,
        );
        let second = u.check(&acct, K, t(2)).expect("20 of 50 left: goes");
        let third = u.check(&acct, K, t(3)).expect("20 of 30 left: goes");
        let d = u
            .check(&acct, K, t(4))
            .expect_err("10 left: a call of 20 is held");
        assert_eq!(d.code, DenyCode::ExchangeRateLimited);
        let tick = charges(api, Uuid::new_v4(), host, &req(&get, time, None));
        assert!(
            u.check(&tick, K, t(5)).is_ok(),
            "a call of 1 still fits, for any key"
        );
        // the second's answer counted it, not the third still on its way
        u.learn(
            api,
            &acct,
            K,
            (&get, account),
            200,
            &binance_weight(5990),
            t(6),
            &second,
        );
        assert!(
            u.check(&acct, K, t(7)).is_err(),
            "the third is using what the answer shows left"
        );
        let _ = third;
        // the minute ends
        assert!(u.check(&acct, K, t(60_000)).is_ok());
    }

    /// Each of Binance's budgets is its own: `/sapi` weight and the order counts do not
    /// read or overwrite the request weight, and an order count used up holds orders only,
    /// and only that key's.
    #[test]
    fn binance_budgets_are_kept_apart() {
        let api = keygate_exchanges::ExchangeId::Binance.api();
        let u = UpstreamLimits::default();
        let host = "api.binance.com";
        let other = Uuid::new_v4();
        let (get, post) = (Method::GET, Method::POST);
        let order = charges(api, K, host, &req(&post, "/api/v3/order", None));
        assert_eq!(
            order.placed.len(),
            3,
            "weight, orders per 10 s, orders per day"
        );
        let sent = u.check(&order, K, t(0)).unwrap();
        let mut h = binance_weight(10);
        h.insert("x-mbx-order-count-10s", "100".parse().unwrap());
        h.insert("x-mbx-order-count-1d", "100".parse().unwrap());
        u.learn(
            api,
            &order,
            K,
            (&post, "/api/v3/order"),
            200,
            &h,
            t(1),
            &sent,
        );
        assert!(
            u.check(&order, K, t(2)).is_err(),
            "100 orders in 10 s: held"
        );
        let read = charges(api, K, host, &req(&get, "/api/v3/account", None));
        assert!(u.check(&read, K, t(3)).is_ok(), "reads are not orders");
        let theirs = charges(api, other, host, &req(&post, "/api/v3/order", None));
        assert!(
            u.check(&theirs, other, t(4)).is_ok(),
            "another account's orders"
        );
        assert!(
            u.check(&order, K, t(10_000)).is_ok(),
            "the 10 s window ends"
        );

        // a /sapi answer reports its own weight, not the request weight's
        let sapi = charges(
            api,
            K,
            host,
            &req(&get, "/sapi/v1/capital/config/getall", None),
        );
        let sent = u.check(&sapi, K, t(20_000)).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-sapi-used-ip-weight-1m", "12000".parse().unwrap());
        u.learn(
            api,
            &sapi,
            K,
            (&get, "/sapi/v1/capital/config/getall"),
            200,
            &h,
            t(20_001),
            &sent,
        );
        assert!(u.check(&sapi, K, t(20_002)).is_err(), "sapi weight used up");
        assert!(
            u.check(&read, K, t(20_003)).is_ok(),
            "request weight untouched"
        );
    }

    /// Bybit counts each endpoint on its own: one used up holds that endpoint only.
    #[test]
    fn per_endpoint_budgets_hold_only_their_endpoint() {
        let api = keygate_exchanges::ExchangeId::Bybit.api();
        let u = UpstreamLimits::default();
        let host = "api.bybit.com";
        let post = Method::POST;
        let create = charges(api, K, host, &req(&post, "/v5/order/create", None));
        let sent = u.check(&create, K, t(0)).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-bapi-limit", "10".parse().unwrap());
        h.insert("x-bapi-limit-status", "0".parse().unwrap());
        u.learn(
            api,
            &create,
            K,
            (&post, "/v5/order/create"),
            200,
            &h,
            t(1),
            &sent,
        );
        assert!(u.check(&create, K, t(2)).is_err(), "order/create used up");
        let cancel = charges(api, K, host, &req(&post, "/v5/order/cancel", None));
        assert!(
            u.check(&cancel, K, t(3)).is_ok(),
            "order/cancel has its own"
        );
        assert!(u.check(&create, K, t(5_000)).is_ok(), "the window ends");
    }

    /// The map cannot grow without bound: past [`MAX_BUDGETS`] live budgets in a scope, a
    /// call charged in a new one is held, not let out uncounted; once windows end there is
    /// room again.
    #[test]
    fn budgets_per_scope_are_bounded() {
        let u = UpstreamLimits::default();
        let scope = Scope::Key(K);
        let charged = |i: usize| Charges {
            placed: vec![Placed {
                scope: scope.clone(),
                budget: Budget {
                    name: format!("b{i}").into(),
                    per_ip: false,
                    window_ms: 5_000,
                },
                weight: 1,
            }],
            block: scope.clone(),
            public_only: false,
        };
        let rl = RateLimitStatus {
            remaining: Some(5),
            ..Default::default()
        };
        for i in 0..MAX_BUDGETS {
            let c = charged(i);
            let tk = u.check(&c, K, t(0)).expect("room");
            u.observe(&scope, &c.placed[0].budget, &rl, (t(0), t(0)), tk.at[0]);
        }
        let d = u
            .check(&charged(MAX_BUDGETS), K, t(1))
            .expect_err("no room: held");
        assert_eq!(d.code, DenyCode::ExchangeRateLimited);
        assert!(
            u.check(&charged(0), K, t(2)).is_ok(),
            "a tracked budget still goes"
        );
        assert!(
            u.check(&charged(MAX_BUDGETS), K, t(5_000)).is_ok(),
            "the windows ended"
        );
        assert!(u.by_scope.lock().get(&scope).unwrap().budgets.len() <= MAX_BUDGETS);
    }

    /// Binance bans per IP whichever budget a call was charged in: a 418 to a call weighed
    /// only per account (`withdraw/history`) still holds every key sent to the host.
    #[test]
    fn an_ip_ban_on_an_account_weighed_call_holds_the_host() {
        let api = keygate_exchanges::ExchangeId::Binance.api();
        let u = UpstreamLimits::default();
        let host = "api.binance.com";
        let get = Method::GET;
        let path = "/sapi/v1/capital/withdraw/history";
        let history = charges(api, K, host, &req(&get, path, None));
        assert!(
            history.placed.iter().all(|p| !p.budget.per_ip),
            "weighed per UID"
        );
        let tk = u.check(&history, K, t(0)).unwrap();
        u.learn(
            api,
            &history,
            K,
            (&get, path),
            418,
            &HeaderMap::new(),
            t(1),
            &tk,
        );
        let other = Uuid::new_v4();
        let time = charges(api, other, host, &req(&get, "/api/v3/time", None));
        assert!(
            u.check(&time, other, t(2)).is_err(),
            "another key, same host"
        );
        // and the ban holds another key's call weighed per account only
        let theirs = charges(api, other, host, &req(&get, path, None));
        assert!(
            u.check(&theirs, other, t(3)).is_err(),
            "an account-weighed call"
        );
    }

    /// A call that weighs nothing (a USD-M order) is still held once nothing is left.
    #[test]
    fn nothing_left_holds_weightless_calls() {
        let api = keygate_exchanges::ExchangeId::Binanceusdm.api();
        let u = UpstreamLimits::default();
        let host = "fapi.binance.com";
        let (get, post) = (Method::GET, Method::POST);
        let account = charges(api, K, host, &req(&get, "/fapi/v2/account", None));
        let tk = u.check(&account, K, t(0)).unwrap();
        let h = binance_weight(2400);
        u.learn(
            api,
            &account,
            K,
            (&get, "/fapi/v2/account"),
            200,
            &h,
            t(1),
            &tk,
        );
        let order = charges(api, K, host, &req(&post, "/fapi/v1/order", None));
        assert_eq!(order.placed[0].weight, 0);
        assert!(u.check(&order, K, t(2)).is_err());
    }

    /// Gate's paths carry ids: every order's cancel shares the cancel budget, so a new id
    /// does not open a fresh one.
    #[test]
    fn ids_in_a_path_share_its_budget() {
        let api = keygate_exchanges::ExchangeId::Gate.api();
        let del = Method::DELETE;
        let name = |path: &str| {
            charges(api, K, "api.gateio.ws", &req(&del, path, None)).placed[0]
                .budget
                .name
                .to_string()
        };
        assert_eq!(name("/api/v4/spot/orders/1"), name("/api/v4/spot/orders/2"));
        assert_ne!(name("/api/v4/spot/orders/1"), "?");
    }

    /// Blocks are shared through `upstream_blocks` by the scope's stored name.
    #[test]
    fn scopes_round_trip_through_their_stored_name() {
        for s in [Scope::Key(K), Scope::Host("api.binance.com".into())] {
            assert_eq!(Scope::from_stored(&s.stored()), Some(s));
        }
        assert_eq!(Scope::from_stored("key:nonsense"), None);
        assert_eq!(Scope::from_stored("api.binance.com"), None);
        let budget = Held::Budget(Scope::Key(K), "POST /v5/order/create".to_string());
        assert_eq!(Held::from_stored(&budget.stored()), Some(budget));
        let host = Held::Scope(Scope::Host("api.binance.com".into()));
        assert_eq!(Held::from_stored(&host.stored()), Some(host));
    }

    /// KuCoin reports its pool's reset as a countdown (`gw-ratelimit-reset`, ms): a pool
    /// used up holds its calls until then, not until a guessed window end; the other pools
    /// go on.
    #[test]
    fn a_reset_countdown_ends_the_hold() {
        let api = keygate_exchanges::ExchangeId::Kucoin.api();
        let u = UpstreamLimits::default();
        let host = "api.kucoin.com";
        let (get, post) = (Method::GET, Method::POST);
        let order = charges(api, K, host, &req(&post, "/api/v1/hf/orders", None));
        let tk = u.check(&order, K, t(0)).unwrap();
        let mut h = HeaderMap::new();
        h.insert("gw-ratelimit-limit", "4000".parse().unwrap());
        h.insert("gw-ratelimit-remaining", "0".parse().unwrap());
        h.insert("gw-ratelimit-reset", "1500".parse().unwrap());
        u.learn(
            api,
            &order,
            K,
            (&post, "/api/v1/hf/orders"),
            200,
            &h,
            t(10),
            &tk,
        );
        let d = u
            .check(&order, K, t(20))
            .expect_err("the Spot pool is used up");
        assert_eq!(d.retry_after_secs, Some(2));
        let accounts = charges(api, K, host, &req(&get, "/api/v1/accounts", None));
        assert!(
            u.check(&accounts, K, t(30)).is_ok(),
            "the Management pool is not"
        );
        assert!(u.check(&order, K, t(1_520)).is_ok(), "the countdown ended");
        // KuCoin's 429 carries no Retry-After: the block lasts the countdown, not a minute
        let tk = u.check(&order, K, t(2_000)).unwrap();
        h.insert("gw-ratelimit-reset", "2500".parse().unwrap());
        u.learn(
            api,
            &order,
            K,
            (&post, "/api/v1/hf/orders"),
            429,
            &h,
            t(2_000),
            &tk,
        );
        assert!(u.check(&accounts, K, t(4_000)).is_err(), "the key is held");
        assert!(
            u.check(&accounts, K, t(4_600)).is_ok(),
            "for the countdown only"
        );
    }

    /// Countdown resets move with each answer's travel time: a later answer that puts the
    /// end a little earlier is about the same window and is read, not dropped as one
    /// about an earlier window (which left keygate on an older, larger count).
    #[test]
    fn countdown_answers_a_little_apart_are_one_window() {
        let api = keygate_exchanges::ExchangeId::Kucoin.api();
        let u = UpstreamLimits::default();
        let post = Method::POST;
        let path = "/api/v1/hf/orders";
        let order = charges(api, K, "api.kucoin.com", &req(&post, path, None));
        let answer = |remaining: &str, reset: &str| {
            let mut h = HeaderMap::new();
            h.insert("gw-ratelimit-limit", "4000".parse().unwrap());
            h.insert("gw-ratelimit-remaining", remaining.parse().unwrap());
            h.insert("gw-ratelimit-reset", reset.parse().unwrap());
            h
        };
        let first = u.check(&order, K, t(0)).unwrap();
        let second = u.check(&order, K, t(1)).unwrap();
        // the first answer travelled slowly, the second fast: its end comes out 200 ms
        // earlier
        u.learn(
            api,
            &order,
            K,
            (&post, path),
            200,
            &answer("3990", "1500"),
            t(300),
            &first,
        );
        u.learn(
            api,
            &order,
            K,
            (&post, path),
            200,
            &answer("0", "1500"),
            t(100),
            &second,
        );
        assert!(u.check(&order, K, t(400)).is_err(), "the newer count holds");
        // the window's end did not move earlier
        assert!(u.check(&order, K, t(1_700)).is_err());
        assert!(u.check(&order, K, t(1_801)).is_ok());
    }

    /// Binance sends no reset time: the window is the minute the call was sent in. An
    /// answer to a call sent just before a minute's end that arrives just after it is about
    /// the minute that ended, and does not hold the new one.
    #[test]
    fn an_answer_across_the_minute_is_about_the_minute_it_was_sent_in() {
        let api = keygate_exchanges::ExchangeId::Binance.api();
        let u = UpstreamLimits::default();
        let get = Method::GET;
        let path = "/api/v3/account";
        let acct = charges(api, K, "api.binance.com", &req(&get, path, None));
        // t(40_000) is a minute's start
        assert_eq!(t(40_000).timestamp_millis() % 60_000, 0);
        let tk = u.check(&acct, K, t(39_900)).unwrap();
        let h = binance_weight(6000);
        u.learn(api, &acct, K, (&get, path), 200, &h, t(40_100), &tk);
        assert!(u.check(&acct, K, t(40_200)).is_ok(), "a new minute");
        // while within the minute it was sent in, the same answer holds
        let tk = u.check(&acct, K, t(40_300)).unwrap();
        u.learn(api, &acct, K, (&get, path), 200, &h, t(40_400), &tk);
        assert!(u.check(&acct, K, t(40_500)).is_err());
    }

    /// An exchange's reset time far in the future is not believed (it would outlast every
    /// later answer and hold the endpoint for good), and one already past is about a
    /// window that ended.
    #[test]
    fn reset_times_out_of_reach_are_not_believed() {
        let u = UpstreamLimits::default();
        let c = &Scope::Key(Uuid::new_v4());
        let at = |remaining: u64, reset: i64| RateLimitStatus {
            remaining: Some(remaining),
            reset_at_ms: Some(t(reset).timestamp_millis()),
            ..Default::default()
        };
        let first = u.check(&one(c), K, t(0)).unwrap();
        observe(&u, c, &at(0, 1_000), t(2_000), &first);
        assert!(
            u.check(&one(c), K, t(2_001)).is_ok(),
            "a past reset: nothing learned"
        );
        let far = u.check(&one(c), K, t(3_000)).unwrap();
        observe(&u, c, &at(0, 100_000_000), t(3_001), &far);
        let next = u.check(&one(c), K, t(3_002));
        assert!(
            next.is_err(),
            "the answer itself still counts: nothing left"
        );
        // the window ends at the minute, not in 100 000 s, and the next answer is read
        let later = u.check(&one(c), K, t(60_000)).expect("the minute ended");
        observe(&u, c, &at(5, 61_000), t(60_001), &later);
        assert!(u.check(&one(c), K, t(60_002)).is_ok());
    }

    /// Public endpoints are counted per source IP: a used-up public budget, or the
    /// exchange's 429 to a public call, holds every key's public calls to that host, and
    /// not the key's own private ones.
    #[test]
    fn public_calls_share_the_address_budget() {
        let (a, b) = (K, Uuid::new_v4());
        // KuCoin: a 429 to a public call (no Retry-After; the countdown says 3 s)
        let api = keygate_exchanges::ExchangeId::Kucoin.api();
        let u = UpstreamLimits::default();
        let (get, post) = (Method::GET, Method::POST);
        let host = "api.kucoin.com";
        let tickers = "/api/v1/market/allTickers";
        let public = |k| charges(api, k, host, &req(&get, tickers, None));
        let tk = u.check(&public(a), a, t(0)).unwrap();
        let mut h = HeaderMap::new();
        // (no remaining count: the 429 alone must hold)
        h.insert("gw-ratelimit-reset", "3000".parse().unwrap());
        h.insert("gw-ratelimit-limit", "2000".parse().unwrap());
        u.learn(api, &public(a), a, (&get, tickers), 429, &h, t(10), &tk);
        assert!(
            u.check(&public(b), b, t(20)).is_err(),
            "another key's public call"
        );
        let order = charges(api, a, host, &req(&post, "/api/v1/hf/orders", None));
        assert!(u.check(&order, a, t(30)).is_ok(), "the key's own orders");
        assert!(
            u.check(&public(b), b, t(3_100)).is_ok(),
            "the countdown ended"
        );

        // Bybit: a public endpoint's window is the address's
        let api = keygate_exchanges::ExchangeId::Bybit.api();
        let host = "api.bybit.com";
        let path = "/v5/market/tickers";
        let tickers = |k| charges(api, k, host, &req(&get, path, None));
        assert!(tickers(a).placed[0].budget.per_ip);
        let tk = u.check(&tickers(a), a, t(0)).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-bapi-limit", "10".parse().unwrap());
        h.insert("x-bapi-limit-status", "0".parse().unwrap());
        u.learn(api, &tickers(a), a, (&get, path), 200, &h, t(1), &tk);
        assert!(
            u.check(&tickers(b), b, t(2)).is_err(),
            "another key, same address"
        );
    }

    /// Near a budget's end (a fifth of the limit, or five calls' weight), an instance that
    /// shares keys with others hands the call's weight, and what it knew was left, to the
    /// shared pool; far from it, or alone on its database, it does not, and a retry near
    /// the end is not sent.
    #[test]
    fn near_a_budgets_end_calls_take_from_the_shared_pool() {
        let left = |remaining: u64| RateLimitStatus {
            used: None,
            limit: Some(100),
            remaining: Some(remaining),
            reset_at_ms: Some(t(60_000).timestamp_millis()),
            reset_in_ms: None,
        };
        let c = &Scope::Key(Uuid::new_v4());
        let shared = UpstreamLimits::new(true);
        let first = shared.check(&one(c), K, t(0)).unwrap();
        assert!(first.edge.is_empty(), "nothing known yet");
        observe(&shared, c, &left(20), t(1), &first);
        assert!(shared.check(&one(c), K, t(2)).unwrap().edge.is_empty());
        // 19 left of 100: below a fifth
        let near = shared.check(&one(c), K, t(3)).unwrap();
        assert_eq!(near.edge.len(), 1);
        let e = &near.edge[0];
        assert_eq!((e.left, e.weight), (19, 1));
        assert_eq!((&e.scope, e.reset_at_ms), (c, t(60_000).timestamp_millis()));
        // a retry near the end is not sent, and nothing is charged for it
        assert!(shared.charge(&one(c), K, t(4), false).is_err());
        assert_eq!(shared.check(&one(c), K, t(4)).unwrap().edge[0].left, 18 + 1);
        // five calls' weight is near the end however large the limit
        let heavy = |w: u64| Charges {
            placed: vec![Placed {
                weight: w,
                ..one(c).placed[0].clone()
            }],
            ..one(c)
        };
        observe(&shared, c, &left(60), t(5), &near);
        assert!(shared.check(&heavy(11), K, t(5)).unwrap().edge.is_empty());
        assert_eq!(shared.check(&heavy(11), K, t(6)).unwrap().edge.len(), 1);
        // alone on its database, an instance's own count is the whole count
        let alone = UpstreamLimits::new(false);
        let first = alone.check(&one(c), K, t(0)).unwrap();
        observe(&alone, c, &left(2), t(1), &first);
        let t2 = alone.check(&one(c), K, t(2)).unwrap();
        assert!(t2.edge.is_empty());
        assert!(alone.charge(&one(c), K, t(3), false).is_ok());
    }

    /// A migrated SQLite store in a directory of its own, for the shared pools.
    async fn scratch_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("keygate-up-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.join("t.db").display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        (store, dir)
    }

    /// The pool decides: a call the pool has no room for is held (and this instance's
    /// later calls in the window, without asking the pool again), what it says is left
    /// becomes the instance's count, the pending weight is settled, and a pool that cannot
    /// be reached holds the call with `counters_unavailable`.
    #[tokio::test]
    async fn the_shared_pool_holds_what_it_has_no_room_for() {
        let (store, dir) = scratch_store().await;
        let reset = t(60_000).timestamp_millis();
        let left = |remaining: u64| RateLimitStatus {
            used: None,
            limit: Some(100),
            remaining: Some(remaining),
            reset_at_ms: Some(reset),
            reset_in_ms: None,
        };
        let pending = |u: &UpstreamLimits, c: &Scope| {
            u.by_scope.lock()[c].budgets[Budget::whole(false).name.as_ref()]
                .pending
                .weight
        };
        let u = UpstreamLimits::new(true);
        let c = &Scope::Key(Uuid::new_v4());
        let first = u.check(&one(c), K, t(0)).unwrap();
        observe(&u, c, &left(10), t(1), &first);
        let a = u.check(&one(c), K, t(2)).unwrap();
        assert_eq!(pending(&u, c), 1);
        u.take_shared(&store, &a, t(2)).await.unwrap();
        assert_eq!(pending(&u, c), 0);
        // another instance takes what is left
        let (bucket, window) = a.edge[0].pool();
        // named by the window's end on the budget's grid (the nearest minute here)
        assert_eq!(window * 1000, reset - reset.rem_euclid(60_000));
        assert_eq!(
            store.take_from_pool(&bucket, window, 9, 9).await.unwrap(),
            (true, 0)
        );
        let b = u.check(&one(c), K, t(3)).unwrap();
        let d = u.take_shared(&store, &b, t(3)).await.unwrap_err();
        assert_eq!(d.code, DenyCode::ExchangeRateLimited);
        assert_eq!(d.retry_after_secs, Some(60));
        assert_eq!(pending(&u, c), 0);
        let d = u.check(&one(c), K, t(4)).unwrap_err();
        assert_eq!(
            d.code,
            DenyCode::ExchangeRateLimited,
            "held here from now on"
        );
        // the pool's count becomes the instance's when lower
        let c2 = &Scope::Key(Uuid::new_v4());
        let first = u.check(&one(c2), K, t(0)).unwrap();
        observe(&u, c2, &left(10), t(1), &first);
        let probe = u.check(&one(c2), K, t(2)).unwrap();
        let (bucket2, _) = probe.edge[0].pool();
        store.take_from_pool(&bucket2, window, 10, 8).await.unwrap();
        u.take_shared(&store, &probe, t(2)).await.unwrap();
        let w = u.by_scope.lock()[c2].budgets[Budget::whole(false).name.as_ref()]
            .window
            .unwrap();
        assert_eq!(w.remaining, 1);
        // unreachable: held, fail closed
        store.close().await;
        let e = u.check(&one(c2), K, t(3)).unwrap();
        let d = u.take_shared(&store, &e, t(3)).await.unwrap_err();
        assert_eq!(d.code, DenyCode::CountersUnavailable);
        assert_eq!(pending(&u, c2), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A call the pool refuses gives its weight back here before the pool's count is
    /// taken on, so that what this instance tells the pool next is not short of it; a take
    /// that empties the pool is shared with the other instances.
    #[tokio::test]
    async fn a_refused_take_gives_back_and_an_emptied_pool_is_shared() {
        let (store, dir) = scratch_store().await;
        let reset = t(60_000).timestamp_millis();
        let u = UpstreamLimits::new(true);
        let c = &Scope::Key(Uuid::new_v4());
        let budget = Budget::whole(false);
        let first = u.check(&one(c), K, t(0)).unwrap();
        let rl = RateLimitStatus {
            used: None,
            limit: Some(100),
            remaining: Some(26),
            reset_at_ms: Some(reset),
            reset_in_ms: None,
        };
        observe(&u, c, &rl, t(1), &first);
        let heavy = |w: u64| Charges {
            placed: vec![Placed {
                weight: w,
                ..one(c).placed[0].clone()
            }],
            ..one(c)
        };
        // the other instances left 15 in the pool
        let bucket = format!("up:{}#{}", c.stored(), budget.name);
        let window = grid_end(reset, budget.window_ms) / 1000;
        assert_eq!(
            store.take_from_pool(&bucket, window, 26, 11).await.unwrap(),
            (true, 15)
        );
        let remaining = |u: &UpstreamLimits| {
            u.by_scope.lock()[c].budgets[budget.name.as_ref()]
                .window
                .unwrap()
                .remaining
        };
        let _ = u.check(&one(c), K, t(2)).unwrap();
        assert_eq!(remaining(&u), 25);
        let big = u.check(&heavy(20), K, t(3)).unwrap();
        assert!(u.take_shared(&store, &big, t(3)).await.is_err());
        assert_eq!(remaining(&u), 15, "the refused call's 20 given back");
        assert!(
            u.unshared.lock().is_empty(),
            "15 are left: nothing to share"
        );
        let last = u.check(&heavy(15), K, t(4)).unwrap();
        u.take_shared(&store, &last, t(4)).await.unwrap();
        assert_eq!(
            u.unshared
                .lock()
                .get(&Held::Budget(c.clone(), budget.name.to_string())),
            Some(&reset),
            "the emptied pool is shared"
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
