//! The thread a group commit's batches run on ([`Store::record_batch`]), one per store:
//! a connection of its own, opened on first use and opened afresh after a failed batch
//! (its state is then unknown), and one hand-over per batch each way. The backends say
//! how to open, write and close ([`Sink`]): `sqlite_writer.rs` and `pg_batch.rs`.
//!
//! [`Store::record_batch`]: crate::Store::record_batch

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::{ApiCallRecord, AuditEvent, StorageError};

/// One backend's side of the writer thread.
pub(crate) trait Sink: Send + 'static {
    type Conn;
    type Error: std::fmt::Display;
    fn open(&mut self) -> Result<Self::Conn, Self::Error>;
    /// Records `calls` and chains and appends `events` in one transaction (chaining
    /// fills the events' chain fields in place).
    fn write(
        &mut self,
        conn: &mut Self::Conn,
        calls: &[ApiCallRecord],
        events: &mut [AuditEvent],
        chain_key: &[u8],
    ) -> Result<(), Self::Error>;
    fn close(&mut self, conn: Self::Conn) {
        drop(conn);
    }
    /// How a failed [`Sink::write`] ended.
    fn outcome(e: &Self::Error) -> Outcome;
}

/// How a failed batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It may have been stored (the connection broke, the COMMIT failed on I/O).
    Unknown,
    /// The database rolled it back: nothing of it is stored.
    RolledBack,
    /// Rolled back because the database refused a row of it (a constraint, a value it
    /// cannot store, a trigger): the rest of the batch, written without that row, would
    /// be stored.
    RowRefused,
}

/// A batch handed back with how it ended: its events (chained, when it was stored), its
/// calls only when the database refused a row (to be written again without it), and why
/// it failed.
struct Done {
    calls: Vec<ApiCallRecord>,
    events: Vec<AuditEvent>,
    result: Result<(), (String, Outcome)>,
}

type Reply = oneshot::Sender<Done>;

enum Job {
    Batch {
        calls: Vec<ApiCallRecord>,
        events: Vec<AuditEvent>,
        chain_key: Vec<u8>,
        done: Reply,
    },
    /// Close the connection (the store is closing; a later batch reopens it).
    Close(oneshot::Sender<()>),
}

/// Handle to a writer thread; the thread ends when the last handle is dropped.
#[derive(Debug)]
pub(crate) struct BatchWriter {
    tx: mpsc::Sender<Job>,
    /// "SQLite" or "PostgreSQL", for error messages.
    backend: &'static str,
}

impl BatchWriter {
    pub(crate) fn start<S: Sink>(
        thread: &str,
        backend: &'static str,
        sink: S,
    ) -> std::io::Result<BatchWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || run(sink, rx))?;
        Ok(BatchWriter { tx, backend })
    }

    /// Writes one batch; hands back its events (chained, when the batch was stored) and,
    /// when the database refused a row of it, its calls too (see [`Done`]).
    pub(crate) async fn write(
        &self,
        calls: Vec<ApiCallRecord>,
        events: Vec<AuditEvent>,
        chain_key: &[u8],
    ) -> (Vec<ApiCallRecord>, Vec<AuditEvent>, crate::Result<()>) {
        let (done, wait) = oneshot::channel();
        let job = Job::Batch {
            calls,
            events,
            chain_key: chain_key.to_vec(),
            done,
        };
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            // the batch never reached it: nothing of it is stored
            let error = StorageError::WriterRolledBack(format!(
                "the {} writer thread has stopped",
                self.backend
            ));
            return match job {
                Job::Batch { calls, events, .. } => (calls, events, Err(error)),
                Job::Close(_) => (Vec::new(), Vec::new(), Err(error)),
            };
        }
        match wait.await {
            Ok(Done {
                calls,
                events,
                result,
            }) => (
                calls,
                events,
                result.map_err(|(e, outcome)| match outcome {
                    Outcome::Unknown => StorageError::Writer(e),
                    Outcome::RolledBack => StorageError::WriterRolledBack(e),
                    Outcome::RowRefused => StorageError::WriterRefusedRow(e),
                }),
            ),
            Err(_) => (
                Vec::new(),
                Vec::new(),
                Err(StorageError::Writer(format!(
                    "the {} writer dropped a batch",
                    self.backend
                ))),
            ),
        }
    }

    pub(crate) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Job::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

fn run<S: Sink>(mut sink: S, rx: mpsc::Receiver<Job>) {
    let mut conn: Option<S::Conn> = None;
    for job in rx {
        match job {
            Job::Close(done) => {
                if let Some(c) = conn.take() {
                    sink.close(c);
                }
                let _ = done.send(());
            }
            Job::Batch {
                calls,
                mut events,
                chain_key,
                done,
            } => {
                let res = match conn.as_mut() {
                    Some(c) => sink
                        .write(c, &calls, &mut events, &chain_key)
                        .map_err(|e| (e.to_string(), S::outcome(&e))),
                    None => match sink.open() {
                        Ok(c) => sink
                            .write(conn.insert(c), &calls, &mut events, &chain_key)
                            .map_err(|e| (e.to_string(), S::outcome(&e))),
                        // not a row's fault, whatever the error says
                        Err(e) => Err((e.to_string(), downgrade(S::outcome(&e)))),
                    },
                };
                match &res {
                    Ok(()) => {}
                    // rolled back by the database, the connection is as before the batch
                    Err((_, Outcome::RowRefused)) => {}
                    // its state is unknown: the next batch opens afresh
                    Err(_) => {
                        if let Some(c) = conn.take() {
                            sink.close(c);
                        }
                    }
                }
                // the rows go back only to be written again; otherwise they are freed
                // here, off the recorder's task
                let calls = match &res {
                    Err((_, Outcome::RowRefused)) => calls,
                    _ => {
                        drop(calls);
                        Vec::new()
                    }
                };
                let _ = done.send(Done {
                    calls,
                    events,
                    result: res,
                });
            }
        }
    }
}

/// A failure to open the connection is never a refused row.
fn downgrade(o: Outcome) -> Outcome {
    match o {
        Outcome::RowRefused => Outcome::RolledBack,
        o => o,
    }
}
