//! The watch driver: one task per watch that reads etcd's watch stream,
//! splits it into one batch per revision, and when the member goes away
//! opens the watch again on another member from the revision after the
//! last one it delivered. It ends when the receiver is dropped or history
//! was compacted past the watch.

use std::time::Duration;

use etcd_client as ec;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use super::convert::{self, rev_in, rev_out};
use super::{EtcdStore, Retry};
use crate::store::{Result, Revision, StoreError, WatchEvent, WatchStream};

/// Batches buffered between the task and the reader; when full, the task
/// stops reading and etcd holds the rest (and catches up from history).
const BUFFER: usize = 64;

type Batch = Result<Vec<WatchEvent>>;

/// An open etcd watch: the member it runs on and its stream.
struct Open {
    member: usize,
    stream: ec::WatchStream,
    /// The first answer (created, or canceled at once).
    first: ec::WatchResponse,
}

pub(super) async fn start(store: EtcdStore, prefix: &str, from: Revision) -> Result<WatchStream> {
    let (start, end) = store.ns().prefix_range(prefix);
    // "From now" made concrete, so a reconnect resumes at the same place.
    let from = if from == 0 {
        store.current_revision().await? + 1
    } else {
        from
    };
    let open = open(&store, &start, &end, from).await?;
    let (tx, rx) = mpsc::channel::<Batch>(BUFFER);
    let task = Task {
        store,
        start,
        end,
        next: from,
        tx,
        prefix: prefix.to_string(),
    };
    tokio::spawn(task.run(open));
    Ok(ReceiverStream::new(rx).boxed())
}

async fn open(store: &EtcdStore, start: &[u8], end: &[u8], from: Revision) -> Result<Open> {
    let (member, (stream, first)) = store
        .call_on("watch", Retry::Always, |m| {
            let mut client = m.watch.clone();
            let opts = ec::WatchOptions::new()
                .with_range(end.to_vec())
                .with_start_revision(rev_out(from))
                .with_progress_notify();
            let start = start.to_vec();
            async move {
                let mut stream = client.watch(start, Some(opts)).await?;
                match stream.message().await? {
                    Some(first) => Ok((stream, first)),
                    None => Err(ec::Error::GRpcStatus(tonic::Status::unavailable(
                        "watch stream closed before the watch was created",
                    ))),
                }
            }
        })
        .await
        .map_err(StoreError::from)?;
    Ok(Open {
        member,
        stream,
        first,
    })
}

struct Task {
    store: EtcdStore,
    start: Vec<u8>,
    end: Vec<u8>,
    /// The first revision not yet delivered.
    next: Revision,
    tx: mpsc::Sender<Batch>,
    prefix: String,
}

/// Why a watch stream stopped.
enum Stop {
    /// The reader is gone or the watch is over: end the task.
    Done,
    /// The member or the stream failed: open again elsewhere.
    Broken(String),
}

impl Task {
    async fn run(mut self, mut open: Open) {
        loop {
            let member = open.member;
            match self.follow(open).await {
                Stop::Done => return,
                Stop::Broken(why) => {
                    warn!(prefix = %self.prefix, next = self.next, error = %why, "etcd watch broke; resuming on another member");
                    self.store.skip_member(member);
                }
            }
            let mut pause = Duration::from_millis(100);
            open = loop {
                if self.tx.is_closed() {
                    return;
                }
                match open_watch(&self).await {
                    Ok(o) => break o,
                    Err(e) => {
                        warn!(prefix = %self.prefix, next = self.next, error = %e, "etcd watch could not be resumed; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            };
            debug!(prefix = %self.prefix, next = self.next, member = open.member, "etcd watch resumed");
        }
    }

    /// Delivers what the stream says until it ends.
    async fn follow(&mut self, open: Open) -> Stop {
        let Open {
            mut stream, first, ..
        } = open;
        if let Some(stop) = self.handle(first).await {
            return stop;
        }
        loop {
            let msg = tokio::select! {
                _ = self.tx.closed() => return Stop::Done,
                m = stream.message() => m,
            };
            match msg {
                Ok(Some(resp)) => {
                    if let Some(stop) = self.handle(resp).await {
                        return stop;
                    }
                }
                Ok(None) => return Stop::Broken("watch stream ended".into()),
                Err(e) => return Stop::Broken(e.to_string()),
            }
        }
    }

    /// One response: events are delivered, compaction ends the watch.
    async fn handle(&mut self, resp: ec::WatchResponse) -> Option<Stop> {
        if resp.compact_revision() > 0 {
            let _ = self
                .tx
                .send(Err(StoreError::Compacted {
                    requested: self.next,
                    compact_revision: rev_in(resp.compact_revision()),
                }))
                .await;
            return Some(Stop::Done);
        }
        if resp.canceled() {
            return Some(Stop::Broken(format!(
                "watch canceled: {}",
                resp.cancel_reason()
            )));
        }
        if resp.events().is_empty() {
            // A progress notification: nothing up to its revision is left.
            if !resp.created() {
                if let Some(h) = resp.header() {
                    self.next = self.next.max(rev_in(h.revision()) + 1);
                }
            }
            return None;
        }
        let mut events = Vec::with_capacity(resp.events().len());
        for ev in resp.events() {
            match convert::event_in(self.store.ns(), ev) {
                // A reconnect can repeat what was delivered; drop it.
                Ok(ev) if ev.revision() < self.next => {}
                Ok(ev) => events.push(ev),
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return Some(Stop::Done);
                }
            }
        }
        for batch in convert::batches(events) {
            let rev = batch[0].revision();
            if self.tx.send(Ok(batch)).await.is_err() {
                return Some(Stop::Done);
            }
            self.next = rev + 1;
        }
        None
    }
}

async fn open_watch(task: &Task) -> std::result::Result<Open, StoreError> {
    open(&task.store, &task.start, &task.end, task.next).await
}
