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
    /// Records `calls` and chains and appends `events` in one transaction; returns the
    /// stored events.
    fn write(
        &mut self,
        conn: &mut Self::Conn,
        calls: &[ApiCallRecord],
        events: Vec<AuditEvent>,
        chain_key: &[u8],
    ) -> Result<Vec<AuditEvent>, Self::Error>;
    fn close(&mut self, conn: Self::Conn) {
        drop(conn);
    }
    /// Whether a failed [`Sink::write`] is known to have stored nothing (the database
    /// rolled its transaction back), rather than ended with an unknown outcome.
    fn rolled_back(e: &Self::Error) -> bool;
}

/// The batch's stored events, or why it failed and whether it was rolled back.
type Reply = oneshot::Sender<Result<Vec<AuditEvent>, (String, bool)>>;

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

    pub(crate) async fn write(
        &self,
        calls: Vec<ApiCallRecord>,
        events: Vec<AuditEvent>,
        chain_key: &[u8],
    ) -> crate::Result<Vec<AuditEvent>> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Batch {
                calls,
                events,
                chain_key: chain_key.to_vec(),
                done,
            })
            .map_err(|_| {
                // the batch never reached it: nothing of it is stored
                StorageError::WriterRolledBack(format!(
                    "the {} writer thread has stopped",
                    self.backend
                ))
            })?;
        wait.await
            .map_err(|_| {
                StorageError::Writer(format!("the {} writer dropped a batch", self.backend))
            })?
            .map_err(|(e, rolled_back)| match rolled_back {
                true => StorageError::WriterRolledBack(e),
                false => StorageError::Writer(e),
            })
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
                events,
                chain_key,
                done,
            } => {
                let res = match conn.as_mut() {
                    Some(c) => sink.write(c, &calls, events, &chain_key),
                    None => sink.open().and_then(|c| {
                        let c = conn.insert(c);
                        sink.write(c, &calls, events, &chain_key)
                    }),
                };
                if res.is_err() {
                    // its state is unknown: the next batch opens afresh
                    if let Some(c) = conn.take() {
                        sink.close(c);
                    }
                }
                let _ = done.send(res.map_err(|e| (e.to_string(), S::rolled_back(&e))));
            }
        }
    }
}
