//! Spend caps (daily volume, withdrawals per day and month) against calls still under
//! way. The stored totals count a call once its `api_calls` row commits, after the
//! exchange answered; without this, parallel orders or withdrawals on one key would all
//! read the same total and all pass.
//!
//! Per credential, one lock covers reading the stored totals, adding what allowed calls
//! still under way hold, the policy decision, and holding this call's amounts; a call
//! gives its hold back only after its row committed (or when it ends without one). So a
//! call is always counted, by the stored total or by its hold: its hold goes back either
//! before a check took the lock (its row was then committed, and the check reads it) or
//! after the check let the lock go (the check saw the hold). Between its commit and its
//! release a call counts twice, which only errs towards refusing.
//!
//! Holds are per process: keygate instances sharing one PostgreSQL each see only their own
//! calls under way (the stored totals they all see). A call whose row fails to commit after
//! it went out keeps its hold for as long as the process runs.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use uuid::Uuid;

/// Amounts held by allowed calls still under way, USD micros.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub volume_micros: i64,
    pub withdrawal_micros: i64,
}

type Slot = Arc<tokio::sync::Mutex<Held>>;

#[derive(Default)]
pub struct Spending {
    slots: Mutex<HashMap<Uuid, Slot>>,
}

impl Spending {
    /// The credential's lock (see the module docs): hold it from reading the stored totals
    /// until the call's amounts are held.
    pub async fn lock(&self, credential: Uuid) -> Check {
        let slot = self.slots.lock().entry(credential).or_default().clone();
        Check {
            guard: slot.lock_owned().await,
        }
    }

    /// Drops the entries of credentials with nothing held and nobody waiting.
    fn tidy(&self) {
        let mut slots = self.slots.lock();
        if slots.len() > 1024 {
            slots.retain(|_, s| {
                Arc::strong_count(s) > 1 || s.try_lock().map_or(true, |h| *h != Held::default())
            });
        }
    }
}

/// A spend check in progress: what calls under way hold, and the lock.
pub struct Check {
    guard: tokio::sync::OwnedMutexGuard<Held>,
}

impl Check {
    /// What allowed calls still under way hold.
    pub fn held(&self) -> Held {
        *self.guard
    }

    /// Holds this call's amounts until the returned hold is released, and lets the lock go.
    pub fn hold(mut self, spending: &Spending, volume_micros: i64, withdrawal_micros: i64) -> Hold {
        self.guard.volume_micros += volume_micros;
        self.guard.withdrawal_micros += withdrawal_micros;
        let slot = tokio::sync::OwnedMutexGuard::mutex(&self.guard).clone();
        drop(self.guard);
        spending.tidy();
        Hold {
            slot: Some(slot),
            amounts: Held {
                volume_micros,
                withdrawal_micros,
            },
        }
    }
}

/// Amounts held for one call; given back by [`Hold::release`] after its row committed, or
/// on drop (a call that ended without one).
pub struct Hold {
    slot: Option<Slot>,
    amounts: Held,
}

impl Hold {
    pub async fn release(mut self) {
        if let Some(slot) = self.slot.clone() {
            let mut held = slot.lock().await;
            take_back(&mut held, self.amounts);
            // only now: cancelled while waiting for the lock, the drop gives it back
            self.slot = None;
        }
    }

    /// Keeps the amounts held for as long as this process runs: the call went out but
    /// its row did not commit, so no stored total will ever count it.
    pub fn keep(mut self) {
        self.slot = None;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let amounts = self.amounts;
            match slot.clone().try_lock_owned() {
                Ok(mut h) => take_back(&mut h, amounts),
                Err(_) => {
                    // outside a runtime the process is going down with its holds
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move { take_back(&mut *slot.lock().await, amounts) });
                    }
                }
            }
        }
    }
}

fn take_back(h: &mut Held, amounts: Held) {
    h.volume_micros -= amounts.volume_micros;
    h.withdrawal_micros -= amounts.withdrawal_micros;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hold_counts_until_it_is_released_or_dropped() {
        let s = Spending::default();
        let c = Uuid::new_v4();
        let first = s.lock(c).await.hold(&s, 5, 7);
        let second = s.lock(c).await.hold(&s, 1, 0);
        let check = s.lock(c).await;
        assert_eq!(
            check.held(),
            Held {
                volume_micros: 6,
                withdrawal_micros: 7
            }
        );
        drop(check);
        first.release().await;
        drop(second);
        assert_eq!(s.lock(c).await.held(), Held::default());
        assert_eq!(
            s.lock(Uuid::new_v4()).await.held(),
            Held::default(),
            "per credential"
        );
    }

    /// A second check waits while the first holds the lock: it cannot read the totals
    /// before the first call's amount is held.
    #[tokio::test]
    async fn a_check_waits_for_the_one_before_it() {
        let s = Arc::new(Spending::default());
        let c = Uuid::new_v4();
        let first = s.lock(c).await;
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.lock(c).await.held() })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let _hold = first.hold(&s, 3, 0);
        assert_eq!(waiter.await.unwrap().volume_micros, 3);
    }
}
