//! Plugging VIFs into br-int the way a compute driver does: over one
//! persistent OVSDB session (an `ovs-vsctl` process per plug costs ~15 ms
//! of its own, which would swamp what the benchmarks measure).

use std::path::Path;

use ovsdb::{Condition, Datum, Mutation, Mutator, Operation, Row};

use crate::error::{LabError, Result};

/// Plugs VIFs into br-int as a compute driver does, over one OVSDB session.
pub struct VifPlug {
    rt: tokio::runtime::Runtime,
    client: ovsdb::Client,
}

fn ovsdb_error(what: &str, e: impl std::fmt::Display) -> LabError {
    LabError::Check(format!("OVSDB {what}: {e}"))
}

impl VifPlug {
    /// Connects to the node's OVSDB socket.
    pub fn connect(db: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| LabError::Io {
                op: "start runtime",
                path: db.to_path_buf(),
                source,
            })?;
        let (client, _updates) = rt
            .block_on(ovsdb::Client::connect_unix(db, Default::default()))
            .map_err(|e| ovsdb_error("connect", e))?;
        Ok(VifPlug { rt, client })
    }

    /// Adds an internal port `name` (cut to 15 bytes) to br-int with
    /// `external_ids:iface-id=<nic_id>`.
    pub fn plug(&self, name: &str, nic_id: &str) -> Result<()> {
        let name = &name[..name.len().min(15)];
        let iface: Row = [
            ("name".to_string(), Datum::string(name)),
            ("type".to_string(), Datum::string("internal")),
            (
                "external_ids".to_string(),
                Datum::map([("iface-id", nic_id)]),
            ),
        ]
        .into();
        let port: Row = [
            ("name".to_string(), Datum::string(name)),
            ("interfaces".to_string(), Datum::named_uuid("iface")),
        ]
        .into();
        let ops = [
            Operation::Insert {
                table: "Interface".into(),
                row: iface,
                uuid_name: Some("iface".into()),
            },
            Operation::Insert {
                table: "Port".into(),
                row: port,
                uuid_name: Some("port".into()),
            },
            Operation::Mutate {
                table: "Bridge".into(),
                conditions: vec![Condition::eq("name", Datum::string("br-int"))],
                mutations: vec![Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Datum::named_uuid("port"),
                )],
            },
        ];
        self.rt
            .block_on(self.client.transact("Open_vSwitch", &ops))
            .map_err(|e| ovsdb_error("plug", e))?;
        Ok(())
    }
}
