//! The exchanges' own refusals for rate, and the budgets they report used up, shared by
//! every instance on one database (`upstream_blocks`). An instance that learns one writes
//! it here; each instance reads the live ones every second
//! (`keygate-server/src/gateway/upstream.rs`).

use crate::{Actor, DbTime, Result, Store};

/// One exchange block: calls in `scope` are held until `blocked_until`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UpstreamBlock {
    /// `host:<exchange host>` or `key:<credential id>`; with `#<budget>` appended, only
    /// the calls charged in that budget of the scope (one the exchange reported used up).
    pub scope: String,
    pub blocked_until: DbTime,
    /// When the block was last moved on (the writer's clock).
    pub updated_at: DbTime,
}

/// Rows whose block ended this long ago are deleted when a new block is written.
const KEEP_ENDED: chrono::Duration = chrono::Duration::hours(1);

impl Store {
    /// Records that the exchange refused calls in each block's `scope` until its
    /// `blocked_until` (a block never moves back: a shorter one leaves a longer one in
    /// force, and its `updated_at` too), and forgets blocks that ended over an hour ago.
    /// Does not move the write epoch: a block is not part of any call's context.
    pub async fn record_upstream_blocks(
        &self,
        blocks: &[UpstreamBlock],
        now: DbTime,
    ) -> Result<()> {
        let upsert = "INSERT INTO upstream_blocks (scope, blocked_until, updated_at) VALUES ($1, $2, $3) \
                      ON CONFLICT (scope) DO UPDATE SET \
                      updated_at = CASE WHEN excluded.blocked_until > upstream_blocks.blocked_until \
                                        THEN excluded.updated_at ELSE upstream_blocks.updated_at END, \
                      blocked_until = CASE WHEN excluded.blocked_until > upstream_blocks.blocked_until \
                                           THEN excluded.blocked_until ELSE upstream_blocks.blocked_until END";
        let ended = DbTime(now.0 - KEEP_ENDED);
        // one transaction of single-row writes, no reads: a deferred BEGIN cannot fail half
        // way, and nothing here is part of any call's context
        in_tx!(@quiet self, Actor::service(), |tx| {
            for b in blocks {
                sqlx::query::<DB>(upsert)
                    .bind(&b.scope)
                    .bind(b.blocked_until)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query::<DB>("DELETE FROM upstream_blocks WHERE blocked_until < $1")
                .bind(ended)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// The blocks still in force at `now`.
    pub async fn upstream_blocks(&self, now: DbTime) -> Result<Vec<UpstreamBlock>> {
        // a read, every second on every instance: it must not move the write epoch
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query_as::<DB, UpstreamBlock>(
                "SELECT scope, blocked_until, updated_at FROM upstream_blocks WHERE blocked_until > $1",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?
        }))
    }
}
