//! Background jobs, each run once per period across every instance.
//!
//! Each tick, an instance takes a lease per job (`job_leases`: an upsert that only succeeds
//! when the lease has expired or is already ours, atomic on both backends) and runs the
//! jobs it holds. On top of that, each job's unit of work is claimed on its own: a reminder
//! by its unique key (`sent_reminders`), a webhook delivery by `claimed_until` (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`), so even two instances running the same job at once never
//! send anything twice. Job functions take `now`, so tests inject the clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Span;
use keygate_storage::{Actor, DbTime};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use crate::webhooks::{queue_once, Once};

/// Handle to the runner: `wake` makes it run the delivery job now.
#[derive(Clone)]
pub struct Jobs {
    notify: Arc<Notify>,
    /// This instance's lease holder id.
    pub holder: Arc<str>,
}

impl Default for Jobs {
    fn default() -> Self {
        Self::new()
    }
}

impl Jobs {
    pub fn new() -> Self {
        Jobs {
            notify: Arc::new(Notify::new()),
            holder: Uuid::new_v4().to_string().into(),
        }
    }
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Days before the due date at which a reminder goes out.
pub const REMIND_BEFORE_DAYS: [i64; 4] = [30, 14, 7, 1];
/// Days after the due date at which an overdue reminder goes out (then every 30 days).
pub const OVERDUE_DAYS: [i64; 5] = [0, 1, 7, 14, 30];

/// The reminder stage for a due date at `now`: `before_30d` … `before_1d`, then
/// `overdue_0d`, `overdue_1d`, … `overdue_30d`, `overdue_60d`, …; `None` when more than
/// 30 days remain.
pub fn reminder_stage(due: DbTime, now: DbTime) -> Option<String> {
    let left = due.0 - now.0;
    if left > Span::days(30) {
        return None;
    }
    if left > Span::zero() {
        let d = REMIND_BEFORE_DAYS
            .iter()
            .rev()
            .find(|d| left <= Span::days(**d))
            .copied()
            .unwrap_or(30);
        return Some(format!("before_{d}d"));
    }
    let late = (now.0 - due.0).num_days();
    let o = if late >= 30 {
        late / 30 * 30
    } else {
        OVERDUE_DAYS
            .iter()
            .rev()
            .find(|o| late >= **o)
            .copied()
            .unwrap_or(0)
    };
    Some(format!("overdue_{o}d"))
}

/// Sends the reminders before keys' own expiry (`expires_at`), 30, 14, 7 and 1 days
/// ahead, as `credential.expiry_reminder` webhooks (each once, across instances, and at
/// most one reminder per key in 20 hours with the rotation ones); returns how many this
/// call sent. A key past its expiry is the expiry job's ([`expire_credentials`]).
pub async fn run_expiry_reminders(state: &AppState, now: DbTime) -> Result<usize, ApiError> {
    let horizon = DbTime::new(now.0 + Span::days(30) + Span::seconds(1));
    let mut sent = 0;
    let mut after = None;
    loop {
        let rows = state
            .store
            .credentials_expiring(now, horizon, after, 200)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.expires_at, last.id));
        let n = rows.len();
        for c in rows {
            let Some(stage) = reminder_stage(c.expires_at, now) else {
                continue;
            };
            let once = Once {
                key: format!("expiry:{}:{}:{stage}", c.id, c.expires_at.micros()),
                subject_kind: "credential_expiry",
                subject_id: c.id,
                user: Some(c.user_id),
                event_type: "credential.expiry_reminder",
                data: serde_json::json!({
                    "credential_id": c.id,
                    "label": c.label,
                    "exchange": c.exchange,
                    "expires_at": c.expires_at.0,
                    "stage": stage,
                }),
                due: Some(c.expires_at),
            };
            match queue_once(state, once, now).await {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(credential = %c.id, error = %e, "expiry reminder not sent")
                }
            }
        }
        if n < 200 {
            break;
        }
    }
    if sent > 0 {
        state.jobs.wake();
    }
    Ok(sent)
}

/// Sends due rotation reminders for credentials and site keys; returns how many this call
/// sent (claimed).
pub async fn run_rotation_reminders(state: &AppState, now: DbTime) -> Result<usize, ApiError> {
    let horizon = DbTime::new(now.0 + Span::days(30) + Span::seconds(1));
    let mut sent = 0;
    let mut after = None;
    loop {
        let rows = state
            .store
            .rotations_due(Actor::service(), None, horizon, after, 200)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.next_due_at, last.credential_id));
        let n = rows.len();
        for r in rows {
            if keygate_storage::NO_REMINDER_STATUSES.contains(&r.status.as_str()) {
                continue;
            }
            let Some(stage) = reminder_stage(r.next_due_at, now) else {
                continue;
            };
            // one reminder that cannot be queued (say, too many endpoints for one insert)
            // is logged and skipped: it must not hold up every reminder after it
            match remind_credential(state, &r, &stage, now).await {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(credential = %r.credential_id, error = %e, "rotation reminder not sent")
                }
            }
        }
        if n < 200 {
            break;
        }
    }
    for k in state.store.site_keys_due(horizon).await? {
        let (Some(due), Some(stage)) = (
            k.next_rotation_at,
            k.next_rotation_at.and_then(|d| reminder_stage(d, now)),
        ) else {
            continue;
        };
        match remind_site_key(state, &k, due, &stage, now).await {
            Ok(true) => sent += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(site_key = %k.id, error = %e, "site key reminder not sent"),
        }
    }
    if sent > 0 {
        state.jobs.wake();
    }
    Ok(sent)
}

/// Queues credential `r`'s reminder for `stage` unless it was sent; true when queued now.
async fn remind_credential(
    state: &AppState,
    r: &keygate_storage::DueRotation,
    stage: &str,
    now: DbTime,
) -> Result<bool, ApiError> {
    let once = Once {
        key: format!(
            "rotation:{}:{}:{stage}",
            r.credential_id,
            r.next_due_at.micros()
        ),
        subject_kind: "credential",
        subject_id: r.credential_id,
        user: Some(r.user_id),
        event_type: "rotation.reminder",
        data: serde_json::json!({
            "credential_id": r.credential_id,
            "label": r.label,
            "exchange": r.exchange,
            "due_at": r.next_due_at.0,
            "stage": stage,
        }),
        due: Some(r.next_due_at),
    };
    queue_once(state, once, now).await
}

/// Queues site key `k`'s reminder for `stage` unless it was sent; true when queued now.
async fn remind_site_key(
    state: &AppState,
    k: &keygate_storage::SiteKeyRecord,
    due: DbTime,
    stage: &str,
    now: DbTime,
) -> Result<bool, ApiError> {
    let once = Once {
        key: format!("site_key:{}:{}:{stage}", k.id, due.micros()),
        subject_kind: "site_key",
        subject_id: k.id,
        user: None,
        event_type: "site_key.rotation_reminder",
        data: serde_json::json!({
            "site_key_id": k.id,
            "name": k.name,
            "provider": k.provider,
            "due_at": due.0,
            "stage": stage,
        }),
        due: Some(due),
    };
    queue_once(state, once, now).await
}

/// Marks keys past their `expires_at` as `expired` (audited `credential`/`expire`), and
/// generations past their rotation grace as revoked.
pub async fn expire_credentials(state: &AppState, now: DbTime) -> Result<usize, ApiError> {
    let expired = state.store.expire_due(now, 500).await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let system = crate::auth::Caller::system();
    let events = expired
        .iter()
        .map(|(user, id)| {
            let mut ev = crate::recorder::event(
                "credential",
                "expire",
                &system,
                Some(*user),
                &crate::recorder::RequestMeta::default(),
            );
            ev.credential_id = Some(*id);
            ev.reason = Some("expires_at passed".into());
            ev
        })
        .collect();
    state.recorder.record(events, vec![]).await?;
    Ok(expired.len())
}

/// One pass of every job whose lease this instance gets.
pub async fn tick(state: &AppState, now: DbTime) {
    let interval = Span::milliseconds(state.config.jobs_interval_ms as i64);
    // The lease is a little shorter than the period so the next tick can take it again.
    let until = DbTime::new(now.0 + interval - Span::milliseconds(10));
    let holder = state.jobs.holder.clone();
    let lease = |name: &'static str| {
        let holder = holder.clone();
        async move {
            match state.store.try_job_lease(name, &holder, now, until).await {
                Ok(got) => got,
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "job lease failed");
                    false
                }
            }
        }
    };
    if lease("rotation_reminders").await {
        if let Err(e) = run_rotation_reminders(state, now).await {
            tracing::warn!(job = "rotation_reminders", error = %e, "job failed");
        }
        if let Err(e) = crate::integrations::send_held_reconsent_notices(state, now).await {
            tracing::warn!(job = "reconsent_notices", error = %e, "job failed");
        }
        if let Err(e) = run_expiry_reminders(state, now).await {
            tracing::warn!(job = "expiry_reminders", error = %e, "job failed");
        }
    }
    if lease("token_refresh").await {
        if let Err(e) = crate::integrations::refresh_due(state, now).await {
            tracing::warn!(job = "token_refresh", error = %e, "job failed");
        }
    }
    if lease("connection_sync").await {
        if let Err(e) = crate::gateway::sync::run_connection_sync(
            state,
            now,
            state.config.sync_interval_minutes,
        )
        .await
        {
            tracing::warn!(job = "connection_sync", error = %e, "job failed");
        }
    }
    if lease("credential_expiry").await {
        if let Err(e) = expire_credentials(state, now).await {
            tracing::warn!(job = "credential_expiry", error = %e, "job failed");
        }
    }
    if lease("prune_counters").await {
        // Counter windows are keyed by their start in seconds; keep the last day. The
        // exchange rate-limit pools are keyed by their window's end: kept a minute past it
        // (the instances' clocks may differ).
        let before = now.0.timestamp() - 86_400;
        let pools_before = now.0.timestamp() - 60;
        if let Err(e) = state.store.prune_counters(before, pools_before).await {
            tracing::warn!(job = "prune_counters", error = %e, "job failed");
        }
        // a revoked token past its `exp` and leeway (kept in the row's expiry) is refused
        // by its expiry alone
        if let Err(e) = state.store.prune_revoked_sign_ins(now).await {
            tracing::warn!(job = "prune_revoked_sign_ins", error = %e, "job failed");
        }
        if let Err(e) = state.store.prune_vault_sessions(now).await {
            tracing::warn!(job = "prune_vault_sessions", error = %e, "job failed");
        }
    }
    deliver(state, now).await;
}

/// Webhook delivery has no lease: every instance may send, rows are claimed one by one.
async fn deliver(state: &AppState, now: DbTime) {
    if let Err(e) = crate::webhooks::deliver_due(state, now).await {
        tracing::warn!(job = "webhook_delivery", error = %e, "job failed");
    }
}

/// Spawns the runner: a tick every `jobs_interval_ms`, and a delivery pass on `wake`.
pub fn start(state: AppState) {
    let period = Duration::from_millis(state.config.jobs_interval_ms);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => tick(&state, DbTime::now()).await,
                _ = state.jobs.notify.notified() => deliver(&state, DbTime::now()).await,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(days: i64, secs: i64) -> DbTime {
        DbTime::new(
            chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
                + Span::days(days)
                + Span::seconds(secs),
        )
    }

    #[test]
    fn stages() {
        let due = t(0, 0);
        assert_eq!(reminder_stage(due, t(-31, 0)), None);
        assert_eq!(reminder_stage(due, t(-30, 0)).unwrap(), "before_30d");
        assert_eq!(reminder_stage(due, t(-15, 0)).unwrap(), "before_30d");
        assert_eq!(reminder_stage(due, t(-14, 0)).unwrap(), "before_14d");
        assert_eq!(reminder_stage(due, t(-7, 0)).unwrap(), "before_7d");
        assert_eq!(reminder_stage(due, t(-2, 0)).unwrap(), "before_7d");
        assert_eq!(reminder_stage(due, t(-1, 0)).unwrap(), "before_1d");
        assert_eq!(reminder_stage(due, t(0, -1)).unwrap(), "before_1d");
        assert_eq!(reminder_stage(due, t(0, 0)).unwrap(), "overdue_0d");
        assert_eq!(reminder_stage(due, t(1, 5)).unwrap(), "overdue_1d");
        assert_eq!(reminder_stage(due, t(6, 0)).unwrap(), "overdue_1d");
        assert_eq!(reminder_stage(due, t(29, 0)).unwrap(), "overdue_14d");
        assert_eq!(reminder_stage(due, t(65, 0)).unwrap(), "overdue_60d");
    }
}
