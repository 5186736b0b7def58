//! Spend caps (daily volume, withdrawals per day and per month) against calls still under
//! way. The check-and-reserve itself is the database's (`keygate_storage::Store::
//! begin_spend_check`): an allowed call's amounts go into the shared ledger under a lock
//! per credential that every instance takes, before the call goes out, and its row's
//! commit settles them. So parallel orders or withdrawals on one key, on one instance or
//! several, cannot each read the same total and all pass.
//!
//! This module keeps one check at a time in this process per lock the database takes (per
//! credential on PostgreSQL; on SQLite the write lock is one for the whole file, so one
//! check at a time), so that waiting calls wait here rather than each holding a pool
//! connection while they wait for the database's lock. And it gives back what a call
//! reserved when the call ends with no row before it went out.

use std::collections::HashMap;
use std::sync::Arc;

use keygate_storage::{Backend, SpendReservation, Store};
use parking_lot::Mutex;
use uuid::Uuid;

type Slot = Arc<tokio::sync::Mutex<()>>;

pub struct Spending {
    slots: Mutex<HashMap<Uuid, Slot>>,
    /// The database's lock is per credential (else one for every credential).
    per_credential: bool,
}

impl Spending {
    pub fn new(backend: Backend) -> Self {
        Spending {
            slots: Mutex::default(),
            per_credential: backend == Backend::Postgres,
        }
    }

    /// This process's turn at the credential's spend check: hold it until the check has
    /// reserved or been dropped.
    pub async fn lock(&self, credential: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        let credential = if self.per_credential {
            credential
        } else {
            Uuid::nil()
        };
        let slot = {
            let mut slots = self.slots.lock();
            if slots.len() > 1024 {
                // credentials nobody is checking
                slots.retain(|_, s| Arc::strong_count(s) > 1);
            }
            slots.entry(credential).or_default().clone()
        };
        slot.lock_owned().await
    }
}

/// What an allowed call reserved, until its row carries it ([`Reserved::settle`]); given
/// back if the call ends without a row before it went out.
pub struct Reserved {
    store: Store,
    reservation: Option<SpendReservation>,
    /// The call is going out: only its row may give the reservation back.
    sent: bool,
}

impl Reserved {
    pub fn new(store: Store, reservation: SpendReservation) -> Self {
        Reserved {
            store,
            reservation: Some(reservation),
            sent: false,
        }
    }

    /// The call is about to go out: should it end without a row from here (a panic), its
    /// amounts stay counted.
    pub fn going_out(&mut self) {
        self.sent = true;
    }

    /// For the call's row: its commit settles the reservation (gives it back if the row
    /// says the call did not go out). If that commit fails, a call that went out stays
    /// counted; one that did not is given back by `finish` (`gateway/mod.rs`) when the
    /// database rolled the commit back, and stays counted when its outcome is unknown.
    /// Also says whether the call went out ([`Reserved::going_out`]).
    pub fn settle(mut self) -> Option<(SpendReservation, bool)> {
        let sent = self.sent;
        self.reservation.take().map(|r| (r, sent))
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let Some(r) = self.reservation.take().filter(|_| !self.sent) else {
            return;
        };
        // outside a runtime the process is going down: the amounts stay counted
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            rt.spawn(async move {
                if let Err(e) = store.give_back_spend(&r).await {
                    tracing::warn!(error = %e, credential = %r.credential_id, "a spend reservation could not be given back; it stays counted");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second check waits while the first holds the credential's turn; another
    /// credential does not.
    #[tokio::test]
    async fn a_check_waits_for_the_one_before_it() {
        let s = Arc::new(Spending::new(Backend::Postgres));
        let c = Uuid::new_v4();
        let first = s.lock(c).await;
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move {
                let _turn = s.lock(c).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let _other = s.lock(Uuid::new_v4()).await;
        drop(first);
        waiter.await.unwrap();
    }

    /// The highest spend cap is exactly what the ledger counts per call and per day.
    #[test]
    fn the_ledger_clamp_is_the_highest_spend_cap() {
        assert_eq!(
            rust_decimal::Decimal::from(keygate_storage::MAX_SPEND_MICROS),
            keygate_policy::MAX_SPEND_CAP_USD * rust_decimal::Decimal::from(1_000_000)
        );
    }

    /// On SQLite every credential's check takes the one write lock: one at a time.
    #[tokio::test]
    async fn on_sqlite_checks_take_turns_across_credentials() {
        let s = Spending::new(Backend::Sqlite);
        let _first = s.lock(Uuid::new_v4()).await;
        let other =
            tokio::time::timeout(std::time::Duration::from_millis(50), s.lock(Uuid::new_v4()))
                .await;
        assert!(other.is_err(), "another credential waits its turn");
    }
}
