//! The agent's OpenFlow session with its bridge: reconnectable, and speaking
//! in the agent's terms (its flows, its changes, its packet-ins).

use std::time::Duration;

use openflow::flow::port;
use openflow::message::{FlowStatsRequest, GroupMod, PacketIn as OfPacketIn, PacketOut};
use openflow::meter::{MeterMod, MeterModCommand, OFPM_ALL};
use openflow::Message;
use openflow::{Action, Change, Config, Field, Flow, PacketIns};

use crate::pipeline::{COOKIE_OWNER, COOKIE_OWNER_MASK};
use crate::reconcile::FlowChange;

pub type SwitchError = openflow::Error;

/// A packet the pipeline sent up (DHCP, ARP replies on external ports).
#[derive(Debug)]
pub struct PacketIn {
    pub in_port: u32,
    pub data: Vec<u8>,
}

/// The OpenFlow connection to br-int.
pub struct Switch {
    target: String,
    conn: openflow::Switch,
    packet_ins: PacketIns,
}

impl Switch {
    /// Connects to `unix:/path/br-int.mgmt` (or a bare path), waiting as
    /// long as it takes: the socket appears only once ovs-vswitchd has
    /// created the bridge, and it vanishes while ovs-vswitchd restarts.
    pub async fn connect_when_ready(target: &str) -> Self {
        let (conn, packet_ins) = open_retrying(target).await;
        Switch {
            target: target.to_string(),
            conn,
            packet_ins,
        }
    }

    /// A new connection after the old one broke or ovs-vswitchd restarted.
    pub async fn reconnect(&mut self) {
        let (conn, packet_ins) = open_retrying(&self.target).await;
        self.conn = conn;
        self.packet_ins = packet_ins;
    }

    /// The flows of ours installed now (by cookie owner tag), whatever
    /// generation wrote them.
    pub async fn dump_ours(&self) -> Result<Vec<Flow>, SwitchError> {
        let req = FlowStatsRequest {
            cookie: u64::from(COOKIE_OWNER) << 48,
            cookie_mask: COOKIE_OWNER_MASK,
            ..FlowStatsRequest::default()
        };
        Ok(self
            .conn
            .dump_flows(req)
            .await?
            .into_iter()
            .map(|s| s.flow)
            .collect())
    }

    /// Applies the changes in one atomic bundle: all or nothing.
    pub async fn apply(&self, changes: &[FlowChange]) -> Result<(), SwitchError> {
        self.apply_with_groups(&[], changes, &[]).await
    }

    /// Applies group changes and flow changes in one atomic bundle: the
    /// groups in `before` first (flows may use them), those in `after`
    /// last (flows that used them are gone by then).
    pub async fn apply_with_groups(
        &self,
        before: &[GroupMod],
        changes: &[FlowChange],
        after: &[GroupMod],
    ) -> Result<(), SwitchError> {
        let groups = |g: &[GroupMod]| g.iter().cloned().map(Change::Group).collect::<Vec<_>>();
        let mut all = groups(before);
        all.extend(changes.iter().map(|c| match c {
            // An add replaces an entry with the same key, cookie included.
            FlowChange::Add(f) | FlowChange::Modify(f) => Change::Add(f.clone()),
            FlowChange::Delete(k) => Change::DeleteStrict(k.clone()),
        }));
        all.extend(groups(after));
        self.conn.apply_bundle(all).await
    }

    /// The meters installed on the bridge (all of them are ours).
    pub async fn meters(&self) -> Result<Vec<MeterMod>, SwitchError> {
        Ok(self
            .conn
            .meter_configs(OFPM_ALL)
            .await?
            .into_iter()
            .map(|c| MeterMod {
                command: MeterModCommand::Add,
                flags: c.flags,
                meter_id: c.meter_id,
                bands: c.bands,
            })
            .collect())
    }

    /// Adds, replaces or deletes one meter (meters are not part of bundles).
    pub async fn meter(&self, m: MeterMod) -> Result<(), SwitchError> {
        self.conn.send_checked(Message::MeterMod(m)).await
    }

    /// The next packet-in; `None` when the connection is gone.
    pub async fn packet_in(&mut self) -> Option<PacketIn> {
        let p: OfPacketIn = self.packet_ins.recv().await?;
        let in_port = p
            .matches
            .get(Field::InPort)
            .map(|f| f.value as u32)
            .unwrap_or(port::ANY);
        Some(PacketIn {
            in_port,
            data: p.data,
        })
    }

    /// Sends `frame` out of `port`.
    pub async fn send_out(&self, out_port: u32, frame: Vec<u8>) -> Result<(), SwitchError> {
        let po = PacketOut::new(port::CONTROLLER, vec![Action::Output(out_port)], frame);
        self.conn.packet_out(po).await
    }
}

async fn open_retrying(target: &str) -> (openflow::Switch, PacketIns) {
    let mut backoff = Duration::from_millis(20);
    loop {
        match open(target).await {
            Ok(session) => return session,
            Err(e) => tracing::debug!(target, error = %e, "OpenFlow connect failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn open(target: &str) -> Result<(openflow::Switch, PacketIns), SwitchError> {
    let path = target.strip_prefix("unix:").unwrap_or(target);
    openflow::Switch::connect_unix(path, Config::default()).await
}
