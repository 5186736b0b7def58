//! Spend caps (daily volume, withdrawals per day and per month) against calls still under
//! way. The check-and-reserve itself is the database's (`keygate_storage::Store::
//! begin_spend_check`): an allowed call's amounts go into the shared ledger under a lock
//! per credential that every instance takes, before the call goes out, and its row's
//! commit settles them. So parallel orders or withdrawals on one key, on one instance or
//! several, cannot each read the same total and all pass.
//!
//! This module keeps one check per credential at a time in this process, so that parallel
//! calls on one key wait here rather than each holding a database connection while they
//! wait for the database's lock, and it gives back what a call reserved when the call ends
//! with no row (it never went out).

use std::collections::HashMap;
use std::sync::Arc;

use keygate_storage::{SpendReservation, Store};
use parking_lot::Mutex;
use uuid::Uuid;

type Slot = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
pub struct Spending {
    slots: Mutex<HashMap<Uuid, Slot>>,
}

impl Spending {
    /// This process's turn at the credential's spend check: hold it until the check has
    /// reserved or been dropped.
    pub async fn lock(&self, credential: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
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
/// back if the call ends without a row.
pub struct Reserved {
    store: Store,
    reservation: Option<SpendReservation>,
}

impl Reserved {
    pub fn new(store: Store, reservation: SpendReservation) -> Self {
        Reserved {
            store,
            reservation: Some(reservation),
        }
    }

    /// For the call's row: its commit settles the reservation (gives it back if the row
    /// says the call did not go out), and a commit that fails leaves it counted.
    pub fn settle(mut self) -> Option<SpendReservation> {
        self.reservation.take()
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let Some(r) = self.reservation.take() else {
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
        let s = Arc::new(Spending::default());
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
}
