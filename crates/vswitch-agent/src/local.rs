//! The agent's local copy of its last applied state, so it can (re)start and
//! keep the data path right while the whole control plane is down.
//!
//! On disk: a snapshot (`applied-state.json`, written atomically) and a
//! journal of the deltas applied since (`applied-changes.jsonl`, one JSON
//! step per line, appended and synced). A delta costs one short append
//! instead of rewriting every NIC of the node's VPCs; the journal is folded
//! into a new snapshot every [`COMPACT_AFTER`] steps. Loading replays the
//! steps that continue the snapshot and stops at the first that does not
//! (a line torn by a crash, or steps older than a snapshot written just
//! before the crash).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use proto::{Change, NodeState, Revision};
use serde::{Deserialize, Serialize};

const SNAPSHOT: &str = "applied-state.json";
const JOURNAL: &str = "applied-changes.jsonl";

/// Journal steps after which the writer folds them into a new snapshot.
pub const COMPACT_AFTER: usize = 1_000;

/// What survives an agent restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// The generation of the run that wrote the file; the next run uses the
    /// one after, so its flows are told apart by cookie.
    pub generation: u16,
    /// The last state that was installed, if any.
    pub state: Option<NodeState>,
}

/// One journal entry: the changes that take the state at `base` to
/// `revision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub base: Revision,
    pub revision: Revision,
    pub changes: Vec<Change>,
}

/// The state directory of one agent.
#[derive(Clone, Debug)]
pub struct LocalState {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalStateError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl LocalState {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalState { dir: dir.into() }
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> LocalStateError + '_ {
        move |source| LocalStateError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The persisted record with the journal replayed onto it; empty if the
    /// agent never ran here.
    pub fn load(&self) -> Result<Persisted, LocalStateError> {
        let path = self.dir.join(SNAPSHOT);
        let mut record: Persisted = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| LocalStateError::Corrupt { path, source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Persisted::default()),
            Err(source) => return Err(LocalStateError::Io { path, source }),
        };
        let Some(state) = record.state.as_mut() else {
            return Ok(record);
        };
        let path = self.dir.join(JOURNAL);
        let journal = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(record),
            Err(source) => return Err(LocalStateError::Io { path, source }),
        };
        for line in std::io::BufReader::new(journal).lines() {
            let line = line.map_err(Self::io(&path))?;
            let Ok(step) = serde_json::from_str::<Step>(&line) else {
                tracing::warn!(path = %path.display(), "journal ends in a torn line; ignored");
                break;
            };
            if step.revision <= state.revision {
                continue; // already in the snapshot
            }
            if step.base != state.revision {
                tracing::warn!(
                    base = step.base,
                    have = state.revision,
                    "journal step does not follow; ignored from here"
                );
                break;
            }
            for c in &step.changes {
                state.apply(c);
            }
            state.revision = step.revision;
        }
        Ok(record)
    }

    /// Writes `record` as the new snapshot, atomically (a crash leaves the
    /// old or the new one), and empties the journal.
    pub fn store(&self, record: &Persisted) -> Result<(), LocalStateError> {
        let path = self.dir.join(SNAPSHOT);
        let io = Self::io(&path);
        std::fs::create_dir_all(&self.dir).map_err(&io)?;
        let tmp = self.dir.join(format!("{SNAPSHOT}.tmp"));
        let bytes = serde_json::to_vec(record).map_err(|source| LocalStateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(&io)?;
        f.write_all(&bytes).map_err(&io)?;
        f.sync_all().map_err(&io)?;
        std::fs::rename(&tmp, &path).map_err(&io)?;
        sync_dir(&self.dir).map_err(&io)?;
        // Steps left behind by a crash right here are skipped on load: they
        // end at or before the snapshot's revision.
        match std::fs::remove_file(self.dir.join(JOURNAL)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    /// Appends `steps` to the journal and syncs it.
    pub fn append(&self, steps: &[Step]) -> Result<(), LocalStateError> {
        let path = self.dir.join(JOURNAL);
        let io = Self::io(&path);
        let mut bytes = Vec::new();
        for step in steps {
            serde_json::to_writer(&mut bytes, step).map_err(|source| LocalStateError::Corrupt {
                path: path.clone(),
                source,
            })?;
            bytes.push(b'\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(&io)?;
        f.write_all(&bytes).map_err(&io)?;
        f.sync_data().map_err(&io)
    }
}

enum Queued {
    Snapshot(Persisted),
    Step(Step),
}

/// Writes the local copy on its own thread: the node loop hands it deltas
/// (or, rarely, a whole snapshot) and never waits on the disk. The thread
/// keeps its own copy of the state to fold the journal into snapshots.
pub struct Persister {
    queue: Option<std::sync::mpsc::Sender<Queued>>,
    writer: Option<std::thread::JoinHandle<()>>,
    wants_snapshot: Arc<AtomicBool>,
}

impl Persister {
    /// A writer whose files hold `current` (as just loaded or stored).
    pub fn spawn(local: LocalState, current: Persisted) -> Self {
        Self::spawn_compacting_after(local, current, COMPACT_AFTER)
    }

    fn spawn_compacting_after(local: LocalState, current: Persisted, every: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Queued>();
        let wants_snapshot = Arc::new(AtomicBool::new(false));
        let wants = wants_snapshot.clone();
        let writer = std::thread::spawn(move || {
            let mut current = current;
            let mut journaled = 0;
            while let Ok(first) = rx.recv() {
                // Whatever queued up meanwhile goes in one write.
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                if let Some(last) = batch.iter().rposition(|w| matches!(w, Queued::Snapshot(_))) {
                    batch.drain(..last);
                }
                let mut steps = Vec::new();
                let mut snapshot = false;
                for w in batch {
                    match w {
                        Queued::Snapshot(record) => {
                            current = record;
                            snapshot = true;
                        }
                        Queued::Step(step) => {
                            let Some(state) =
                                current.state.as_mut().filter(|s| s.revision == step.base)
                            else {
                                // Not a continuation of what is on disk: ask
                                // for a snapshot and drop steps until then.
                                wants.store(true, Ordering::Relaxed);
                                continue;
                            };
                            for c in &step.changes {
                                state.apply(c);
                            }
                            state.revision = step.revision;
                            steps.push(step);
                        }
                    }
                }
                let result = if snapshot || journaled + steps.len() >= every {
                    journaled = 0;
                    wants.store(false, Ordering::Relaxed);
                    local.store(&current)
                } else if steps.is_empty() {
                    Ok(())
                } else {
                    journaled += steps.len();
                    local.append(&steps)
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "local state not saved");
                    wants.store(true, Ordering::Relaxed);
                }
            }
        });
        Persister {
            queue: Some(tx),
            writer: Some(writer),
            wants_snapshot,
        }
    }

    /// Queues a whole new snapshot.
    pub fn save(&self, record: Persisted) {
        if let Some(tx) = &self.queue {
            let _ = tx.send(Queued::Snapshot(record));
        }
    }

    /// Queues one delta onto what was queued before.
    pub fn append(&self, step: Step) {
        if let Some(tx) = &self.queue {
            let _ = tx.send(Queued::Step(step));
        }
    }

    /// Whether the writer lost track (a step that did not follow, a failed
    /// write) and needs a snapshot to go on.
    pub fn wants_snapshot(&self) -> bool {
        self.wants_snapshot.load(Ordering::Relaxed)
    }
}

impl Drop for Persister {
    /// Finishes the queued writes, so a clean stop leaves the newest state.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use proto::{Object, Vpc};

    use super::*;

    fn state(revision: Revision) -> NodeState {
        NodeState {
            revision,
            ..NodeState::default()
        }
    }

    /// The step from `base` adding VPC `v<base+1>`.
    fn step(base: Revision) -> Step {
        let id = format!("v{}", base + 1);
        Step {
            base,
            revision: base + 1,
            changes: vec![Change::Upsert {
                object: Object::Vpc(Vpc { id, vni: 1 }),
            }],
        }
    }

    fn applied(mut s: NodeState, steps: &[Step]) -> NodeState {
        for st in steps {
            st.changes.iter().for_each(|c| s.apply(c));
            s.revision = st.revision;
        }
        s
    }

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalState::new(dir.path().join("agent"));
        assert_eq!(local.load().unwrap(), Persisted::default());
        let record = Persisted {
            generation: 7,
            state: Some(state(42)),
        };
        local.store(&record).unwrap();
        assert_eq!(local.load().unwrap(), record);
    }

    #[test]
    fn journal_replays_onto_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalState::new(dir.path());
        let record = Persisted {
            generation: 2,
            state: Some(state(10)),
        };
        local.store(&record).unwrap();
        let steps = [step(10), step(11), step(12)];
        local.append(&steps[..1]).unwrap();
        local.append(&steps[1..]).unwrap();
        let loaded = local.load().unwrap();
        assert_eq!(loaded.generation, 2);
        assert_eq!(loaded.state, Some(applied(state(10), &steps)));
        assert!(loaded.state.unwrap().vpcs.contains_key("v13"));
    }

    #[test]
    fn torn_or_stale_journal_lines_stop_the_replay_not_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalState::new(dir.path());
        local
            .store(&Persisted {
                generation: 1,
                state: Some(state(10)),
            })
            .unwrap();
        // Left from before the snapshot (a crash between the snapshot's
        // rename and the journal's removal), then two good steps, then a
        // line torn by a crash.
        local
            .append(&[step(8), step(9), step(10), step(11)])
            .unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(br#"{"base":12,"revision":13,"chan"#).unwrap();
        let loaded = local.load().unwrap().state.unwrap();
        assert_eq!(loaded, applied(state(10), &[step(10), step(11)]));
        // A gap stops the replay too.
        local
            .store(&Persisted {
                generation: 1,
                state: Some(state(10)),
            })
            .unwrap();
        local.append(&[step(10), step(12)]).unwrap();
        assert_eq!(local.load().unwrap().state.unwrap().revision, 11);
    }

    #[test]
    fn persister_journals_deltas_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalState::new(dir.path());
        let start = Persisted {
            generation: 3,
            state: Some(state(0)),
        };
        local.store(&start).unwrap();
        let persister = Persister::spawn_compacting_after(local.clone(), start, 10);
        let steps: Vec<Step> = (0..25).map(step).collect();
        for s in &steps {
            persister.append(s.clone());
        }
        drop(persister);
        let want = applied(state(0), &steps);
        assert_eq!(local.load().unwrap().state.as_ref(), Some(&want));
        // Folded at least once: the journal holds fewer than all 25 steps.
        let journal = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap_or_default();
        assert!(
            journal.lines().count() < 25,
            "{} lines",
            journal.lines().count()
        );
    }

    #[test]
    fn persister_asks_for_a_snapshot_when_a_step_does_not_follow() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalState::new(dir.path());
        let start = Persisted {
            generation: 1,
            state: Some(state(5)),
        };
        local.store(&start).unwrap();
        let persister = Persister::spawn(local.clone(), start);
        persister.append(step(7)); // 6 → 7 never came
        let asked = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            persister.wants_snapshot()
        });
        assert!(asked);
        let fresh = Persisted {
            generation: 1,
            state: Some(state(9)),
        };
        persister.save(fresh.clone());
        persister.append(step(9));
        drop(persister);
        assert_eq!(
            local.load().unwrap().state,
            Some(applied(state(9), &[step(9)]))
        );
    }

    #[test]
    fn corrupt_snapshot_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT), b"{not json").unwrap();
        let err = LocalState::new(dir.path()).load().unwrap_err();
        assert!(matches!(err, LocalStateError::Corrupt { .. }), "{err}");
    }
}
