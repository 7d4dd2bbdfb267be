//! The agent's local copy of its last applied state, so it can (re)start and
//! keep the data path right while the whole control plane is down.

use std::io::Write;
use std::path::{Path, PathBuf};

use proto::NodeState;
use serde::{Deserialize, Serialize};

const FILE: &str = "applied-state.json";

/// What survives an agent restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// The generation of the run that wrote the file; the next run uses the
    /// one after, so its flows are told apart by cookie.
    pub generation: u16,
    /// The last state that was installed, if any.
    pub state: Option<NodeState>,
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

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The persisted record; empty if the agent never ran here.
    pub fn load(&self) -> Result<Persisted, LocalStateError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| LocalStateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
            Err(source) => Err(LocalStateError::Io { path, source }),
        }
    }

    /// Writes the record atomically: a crash leaves the old or the new one.
    pub fn store(&self, record: &Persisted) -> Result<(), LocalStateError> {
        let path = self.path();
        let io = |source| LocalStateError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec(record).map_err(|source| LocalStateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.dir).map_err(io)
    }
}

/// Writes the local copy on its own thread, keeping only the newest record
/// when writes fall behind: the node loop never waits on the disk.
pub struct Persister {
    latest: Option<std::sync::mpsc::Sender<Persisted>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Persister {
    pub fn spawn(local: LocalState) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Persisted>();
        let writer = std::thread::spawn(move || {
            while let Ok(mut record) = rx.recv() {
                while let Ok(newer) = rx.try_recv() {
                    record = newer;
                }
                if let Err(e) = local.store(&record) {
                    tracing::warn!(error = %e, "local state not saved");
                }
            }
        });
        Persister {
            latest: Some(tx),
            writer: Some(writer),
        }
    }

    /// Queues `record` to be written.
    pub fn save(&self, record: Persisted) {
        if let Some(tx) = &self.latest {
            let _ = tx.send(record);
        }
    }
}

impl Drop for Persister {
    /// Finishes the queued write, so a clean stop leaves the newest record.
    fn drop(&mut self) {
        self.latest.take();
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
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalState::new(dir.path().join("agent"));
        assert_eq!(local.load().unwrap(), Persisted::default());
        let record = Persisted {
            generation: 7,
            state: Some(NodeState {
                revision: 42,
                ..NodeState::default()
            }),
        };
        local.store(&record).unwrap();
        assert_eq!(local.load().unwrap(), record);
    }

    #[test]
    fn persister_writes_the_newest_record_before_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let persister = Persister::spawn(LocalState::new(dir.path()));
        for revision in 1..=50 {
            persister.save(Persisted {
                generation: 3,
                state: Some(NodeState {
                    revision,
                    ..NodeState::default()
                }),
            });
        }
        drop(persister);
        let saved = LocalState::new(dir.path()).load().unwrap();
        assert_eq!(saved.state.map(|s| s.revision), Some(50));
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let err = LocalState::new(dir.path()).load().unwrap_err();
        assert!(matches!(err, LocalStateError::Corrupt { .. }), "{err}");
    }
}
