//! Group commit for the hot path's bookkeeping: audit events and `api_calls` rows are sent
//! to one writer task, which commits whatever has queued up in one transaction and then
//! answers every waiter. A request's rows are committed before its response goes back,
//! yet a busy server pays one commit per batch rather than per call.

use std::sync::Arc;

use keygate_storage::{ApiCallRecord, AuditEvent, Store};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::ApiError;
use crate::metrics::Metrics;

struct Job {
    audit: Vec<AuditEvent>,
    calls: Vec<ApiCallRecord>,
    /// Why the batch failed, and whether the database rolled it back.
    done: oneshot::Sender<Result<(), (String, bool)>>,
}

/// Rows that were not recorded.
pub struct Unrecorded {
    pub error: ApiError,
    /// The database rolled the batch back: none of its rows are stored. Otherwise the
    /// outcome is unknown (they may be).
    pub rolled_back: bool,
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
}

impl Recorder {
    pub fn start(store: Store, chain_key: Arc<[u8; 32]>, metrics: Arc<Metrics>) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        // On SQLite a commit costs mostly a fixed dozen page writes, so a batch is worth
        // growing: the task yields, and the calls already runnable on this runtime hand in
        // their rows first. Measured (issue 7): batches of about 7 became about
        // 14, the writer's CPU per call fell by about a quarter. On PostgreSQL a commit is
        // mostly waiting (round trip, WAL flush), and the extra turn only made the calls
        // wait longer: 4–15 % fewer calls per second, so it does not yield there.
        let linger = store.backend() == keygate_storage::Backend::Sqlite;
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if linger {
                    // two turns measured 3–8 % better than one; more, or yielding for as
                    // long as rows keep arriving, measured no better than two
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                }
                let mut jobs = vec![first];
                while jobs.len() < 512 {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let mut audit = Vec::new();
                let mut calls = Vec::new();
                // each job's rows, in order, and who waits for them
                let mut waiters = Vec::with_capacity(jobs.len());
                for j in jobs {
                    waiters.push((j.calls.len(), j.audit.len(), j.done));
                    audit.extend(j.audit);
                    calls.extend(j.calls);
                }
                let res = commit(&store, &metrics, &chain_key, calls, audit).await;
                match res {
                    // One row the database refuses (a constraint, a value it cannot store)
                    // fails the whole batch: the other calls' rows are written again, one
                    // call at a time, so that only the refused row's call goes unrecorded.
                    Err((e, Some(refused)))
                        if waiters.len() > 1
                            && refused.calls.len()
                                == waiters.iter().map(|w| w.0).sum::<usize>()
                            && refused.events.len()
                                == waiters.iter().map(|w| w.1).sum::<usize>() =>
                    {
                        tracing::warn!(error = %e.0, calls = waiters.len(), "the database refused a row of a group commit; its calls are recorded one by one");
                        let mut calls = refused.calls.into_iter();
                        let mut audit = refused.events.into_iter();
                        let (mut stored, mut refusals) = (0, 0);
                        for (n_calls, n_events, done) in waiters {
                            let c = calls.by_ref().take(n_calls).collect();
                            let a = audit.by_ref().take(n_events).collect();
                            // Refused twice, and nothing stored: the cause is not one
                            // row but every row (a column a newer schema requires, a
                            // trigger), and the rest would only fail one by one.
                            if refusals >= 2 && stored == 0 {
                                let _ = done.send(Err(e.clone()));
                                continue;
                            }
                            let one = commit(&store, &metrics, &chain_key, c, a).await;
                            match &one {
                                Ok(()) => stored += 1,
                                Err((_, Some(_))) => refusals += 1,
                                Err(_) => {}
                            }
                            let _ = done.send(one.map_err(|(e, _)| e));
                        }
                    }
                    res => {
                        let res = res.map_err(|(e, _)| e);
                        for (_, _, done) in waiters {
                            let _ = done.send(res.clone());
                        }
                    }
                }
            }
        });
        Recorder { tx }
    }

    /// Commits the rows (batched with concurrent callers) and waits for the commit.
    pub async fn record(
        &self,
        audit: Vec<AuditEvent>,
        calls: Vec<ApiCallRecord>,
    ) -> Result<(), ApiError> {
        self.record_reporting(audit, calls)
            .await
            .map_err(|u| u.error)
    }

    /// [`Recorder::record`], saying on failure whether the rows are known not stored.
    pub async fn record_reporting(
        &self,
        audit: Vec<AuditEvent>,
        calls: Vec<ApiCallRecord>,
    ) -> Result<(), Unrecorded> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { audit, calls, done })
            .await
            .map_err(|_| Unrecorded {
                // the rows never reached it
                error: ApiError::internal("recorder stopped"),
                rolled_back: true,
            })?;
        wait.await
            .map_err(|_| Unrecorded {
                error: ApiError::internal("recorder dropped a job"),
                rolled_back: false,
            })?
            .map_err(|(e, rolled_back)| Unrecorded {
                error: ApiError::internal(e),
                rolled_back,
            })
    }
}

/// One transaction: call rows, credential usage, chained audit events. On failure: why,
/// whether the database rolled it back, and the rows if it refused one of them.
async fn commit(
    store: &Store,
    metrics: &Metrics,
    chain_key: &[u8; 32],
    calls: Vec<ApiCallRecord>,
    audit: Vec<AuditEvent>,
) -> Result<(), ((String, bool), Option<keygate_storage::RefusedBatch>)> {
    let (n_calls, n_events) = (calls.len(), audit.len());
    let started = std::time::Instant::now();
    let res = store
        .record_batch_keeping(calls, audit, chain_key)
        .await
        .map(|_| ());
    metrics.observe_commit(
        n_calls,
        n_events,
        started.elapsed().as_secs_f64(),
        res.is_ok(),
    );
    res.map_err(|(e, refused)| {
        tracing::error!(error = %e, "recording audit/calls failed");
        ((e.to_string(), e.rolled_back()), refused)
    })
}

/// Context of the HTTP request an event comes from.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub device_fingerprint: Option<String>,
    pub geo_country: Option<String>,
    pub geo_city: Option<String>,
    pub request_id: Option<String>,
}

/// A new audit event with the chain fields left for the writer to fill.
pub fn event(
    category: &str,
    action: &str,
    actor: &crate::auth::Caller,
    user: Option<Uuid>,
    meta: &RequestMeta,
) -> AuditEvent {
    AuditEvent {
        actor_id: actor.user_id,
        user_id: user,
        ip_address: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
        device_fingerprint: meta.device_fingerprint.clone(),
        geo_country: meta.geo_country.clone(),
        geo_city: meta.geo_city.clone(),
        session_id: actor.session_id,
        ..AuditEvent::new(category, action, actor.role_name())
    }
}
