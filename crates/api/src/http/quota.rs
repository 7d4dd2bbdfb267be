//! Per-tenant quotas per resource kind, enforced in the store.
//!
//! Usage is kept in [`SHARDS`] counter keys per tenant and kind, each with
//! a share of the limit (its budget: the limit split evenly). A create
//! takes its units from shards with room and commits with a compare on
//! each shard it changed (and on the tenant's limits), in the same
//! transaction as the resource; a delete gives units back to any shard
//! that has some. The sum of the shards never exceeds the sum of the
//! budgets, which is the limit, whatever runs concurrently, and creates
//! in one tenant contend only when they pick the same shard (one counter
//! key would make every create of a tenant retry against every other).
//! The create is refused only when every shard is full, i.e. usage is at
//! the limit. That needs every shard within its budget: changing a limit
//! changes the budgets, so the change moves the counts into the new
//! budgets in its own transaction (what does not fit, usage over a
//! lowered limit, stays in shard 0, over its budget), and a delete gives
//! back to over-budget shards first: no shard has room until usage is
//! under the limit again.
//!
//! Resources made before quotas existed are not counted (a delete never
//! takes a shard below 0).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;

use super::auth::Caller;
use super::db;
use super::extract::{ApiJson, ApiPath};
use super::problem::{ApiResult, Problem};
use super::{validate, AppState};
use crate::model::keys;
use crate::store::{Compare, Op, Store};

/// Counter keys per tenant and kind.
pub const SHARDS: u64 = 256;

/// The largest limit that may be set.
pub const MAX_LIMIT: u64 = 1_000_000_000;

/// What a quota counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Vpcs,
    Subnets,
    Nics,
    SecurityGroups,
    SecurityGroupRules,
    Eips,
    NatGateways,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Vpcs,
        Kind::Subnets,
        Kind::Nics,
        Kind::SecurityGroups,
        Kind::SecurityGroupRules,
        Kind::Eips,
        Kind::NatGateways,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Vpcs => "vpcs",
            Kind::Subnets => "subnets",
            Kind::Nics => "nics",
            Kind::SecurityGroups => "security_groups",
            Kind::SecurityGroupRules => "security_group_rules",
            Kind::Eips => "eips",
            Kind::NatGateways => "nat_gateways",
        }
    }

    /// The limit of a tenant that was never given one.
    pub fn default_limit(self) -> u64 {
        match self {
            Kind::Vpcs => 100,
            Kind::Subnets => 500,
            Kind::Nics => 5_000,
            Kind::SecurityGroups => 500,
            Kind::SecurityGroupRules => 5_000,
            // Public addresses are scarce: a small default.
            Kind::Eips => 50,
            Kind::NatGateways => 10,
        }
    }
}

/// A tenant's limits: every kind, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    pub vpcs: u64,
    pub subnets: u64,
    pub nics: u64,
    pub security_groups: u64,
    pub security_group_rules: u64,
    /// Limits stored before EIPs existed lack it: the default then.
    #[serde(default = "default_eips")]
    pub eips: u64,
    #[serde(default = "default_nat_gateways")]
    pub nat_gateways: u64,
}

fn default_eips() -> u64 {
    Kind::Eips.default_limit()
}

fn default_nat_gateways() -> u64 {
    Kind::NatGateways.default_limit()
}

impl Default for Limits {
    fn default() -> Self {
        Limits::uniform(|k| k.default_limit())
    }
}

impl Limits {
    fn uniform(f: impl Fn(Kind) -> u64) -> Limits {
        Limits {
            vpcs: f(Kind::Vpcs),
            subnets: f(Kind::Subnets),
            nics: f(Kind::Nics),
            security_groups: f(Kind::SecurityGroups),
            security_group_rules: f(Kind::SecurityGroupRules),
            eips: f(Kind::Eips),
            nat_gateways: f(Kind::NatGateways),
        }
    }

    /// Every kind at [`MAX_LIMIT`]: the bootstrap tenant's (the cloud's
    /// own), so operators' tooling and benches are not capped.
    pub fn max() -> Limits {
        Limits::uniform(|_| MAX_LIMIT)
    }

    pub fn get(&self, k: Kind) -> u64 {
        match k {
            Kind::Vpcs => self.vpcs,
            Kind::Subnets => self.subnets,
            Kind::Nics => self.nics,
            Kind::SecurityGroups => self.security_groups,
            Kind::SecurityGroupRules => self.security_group_rules,
            Kind::Eips => self.eips,
            Kind::NatGateways => self.nat_gateways,
        }
    }
}

/// A change of limits: the kinds named are set, the others kept.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchQuotas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpcs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_rules: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eips: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_gateways: Option<u64>,
}

/// A tenant's limits and what it uses.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Quotas {
    pub tenant_id: String,
    pub limits: Limits,
    pub usage: Limits,
}

fn limits_key(tenant: &str) -> String {
    format!("{}{tenant}/limits", keys::QUOTA)
}

fn usage_prefix(tenant: &str) -> String {
    format!("{}{tenant}/usage/", keys::QUOTA)
}

fn shard_key(tenant: &str, kind: Kind, shard: u64) -> String {
    format!("{}{}/{shard:03}", usage_prefix(tenant), kind.name())
}

/// The limits of `tenant` and the revision they were read at (0: never set).
async fn limits(store: &dyn Store, tenant: &str) -> ApiResult<(Limits, u64)> {
    Ok(
        match db::get_json::<Limits>(store, &limits_key(tenant)).await? {
            Some(v) => (v.value, v.mod_revision),
            None => (Limits::default(), 0),
        },
    )
}

/// (kind, shard) → (count, mod_revision) of every shard written so far.
async fn shards(store: &dyn Store, tenant: &str) -> ApiResult<BTreeMap<(Kind, u64), (u64, u64)>> {
    let prefix = usage_prefix(tenant);
    let (kvs, _) = store.range(&prefix).await?;
    let mut out = BTreeMap::new();
    for kv in kvs {
        let rest = &kv.key[prefix.len()..];
        let Some((kind, shard)) = rest.split_once('/') else {
            continue;
        };
        let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == kind) else {
            continue;
        };
        let (Ok(shard), Ok(count)) = (
            shard.parse::<u64>(),
            String::from_utf8_lossy(&kv.value).parse::<u64>(),
        ) else {
            tracing::warn!(key = %kv.key, "unreadable quota counter; ignored");
            continue;
        };
        out.insert((kind, shard), (count, kv.mod_revision));
    }
    Ok(out)
}

/// Shard `shard`'s share of `limit`.
fn budget(limit: u64, shard: u64) -> u64 {
    limit / SHARDS + u64::from(shard < limit % SHARDS)
}

/// What a change of usage adds to the transaction that makes it: compares
/// on the shards it moves and on the limits, and their new counts. A
/// positive delta beyond the limit is a 409 naming the quota.
pub async fn charge(
    store: &dyn Store,
    tenant: &str,
    deltas: &[(Kind, i64)],
) -> ApiResult<(Vec<Compare>, Vec<Op>)> {
    if tenant.is_empty() {
        // Records from before tenants: nobody's quota.
        return Ok((vec![], vec![]));
    }
    let (limits, limits_rev) = limits(store, tenant).await?;
    let mut compare = vec![Compare::mod_revision_is(limits_key(tenant), limits_rev)];
    let mut ops = vec![];
    // The common case, one unit into a shard that has room: one read of
    // that shard instead of all of them.
    if let [(kind, 1)] = deltas {
        let s = rand::thread_rng().gen_range(0..SHARDS);
        let key = shard_key(tenant, *kind, s);
        let (count, rev) = match store.get(&key).await? {
            Some(kv) => (
                String::from_utf8_lossy(&kv.value)
                    .parse::<u64>()
                    .unwrap_or(u64::MAX),
                kv.mod_revision,
            ),
            None => (0, 0),
        };
        if count < budget(limits.get(*kind), s) {
            compare.push(Compare::mod_revision_is(&key, rev));
            ops.push(Op::put(key, (count + 1).to_string().into_bytes()));
            return Ok((compare, ops));
        }
    }
    let current = shards(store, tenant).await?;
    let mut order: Vec<u64> = (0..SHARDS).collect();
    for &(kind, delta) in deltas.iter().filter(|(_, d)| *d != 0) {
        let limit = limits.get(kind);
        order.shuffle(&mut rand::thread_rng());
        if delta < 0 {
            // Over-budget shards first (usage over a lowered limit).
            order.sort_by_key(|s| {
                let count = current.get(&(kind, *s)).map_or(0, |c| c.0);
                std::cmp::Reverse(count.saturating_sub(budget(limit, *s)))
            });
        }
        let mut left = delta.unsigned_abs();
        for &s in &order {
            if left == 0 {
                break;
            }
            let (count, rev) = current.get(&(kind, s)).copied().unwrap_or((0, 0));
            let take = if delta > 0 {
                budget(limit, s).saturating_sub(count).min(left)
            } else {
                count.min(left)
            };
            if take == 0 {
                continue;
            }
            left -= take;
            let new = if delta > 0 {
                count + take
            } else {
                count - take
            };
            let key = shard_key(tenant, kind, s);
            compare.push(Compare::mod_revision_is(&key, rev));
            ops.push(Op::put(key, new.to_string().into_bytes()));
        }
        if left > 0 && delta > 0 {
            let used: u64 = current
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|(_, (c, _))| c)
                .sum();
            return Err(exceeded(kind, limit, used, delta.unsigned_abs()));
        }
        // A delete of something never counted: nothing to give back.
    }
    Ok((compare, ops))
}

fn exceeded(kind: Kind, limit: u64, used: u64, wanted: u64) -> Problem {
    Problem::quota_exceeded(format!(
        "quota `{}` exceeded: the tenant uses {used} of {limit} and this needs {wanted} more; \
         delete some or ask an administrator to raise it (PATCH /v1/tenants/{{id}}/quotas)",
        kind.name()
    ))
}

/// The bootstrap tenant's limits, written with it.
pub fn bootstrap_limits_op(tenant: &str) -> ApiResult<Op> {
    db::put_json(limits_key(tenant), &Limits::max())
}

async fn show(store: &dyn Store, tenant: &str) -> ApiResult<Quotas> {
    let (limits, _) = limits(store, tenant).await?;
    let shards = shards(store, tenant).await?;
    let usage = Limits::uniform(|k| {
        shards
            .iter()
            .filter(|((kind, _), _)| *kind == k)
            .map(|(_, (c, _))| c)
            .sum()
    });
    Ok(Quotas {
        tenant_id: tenant.to_string(),
        limits,
        usage,
    })
}

fn tenant_not_found(id: &str) -> Problem {
    Problem::not_found(format!("tenant {id:?} not found"))
}

async fn visible_tenant(st: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    if !caller.is_system_admin() && caller.tenant_id != id {
        return Err(tenant_not_found(id));
    }
    if !validate::is_id("tenant", id) || st.store.get(&keys::tenant(id)).await?.is_none() {
        return Err(tenant_not_found(id));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/tenants/{id}/quotas", tag = "iam", params(("id" = String, Path)),
    responses((status = 200, body = Quotas), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(tenant_id = %id))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Quotas>> {
    visible_tenant(&st, &caller, &id).await?;
    Ok(Json(show(st.store.as_ref(), &id).await?))
}

#[utoipa::path(patch, path = "/v1/tenants/{id}/quotas", tag = "iam", request_body = PatchQuotas,
    params(("id" = String, Path)),
    responses((status = 200, body = Quotas), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
#[instrument(skip_all, fields(tenant_id = %id))]
pub async fn patch(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PatchQuotas>,
) -> ApiResult<Json<Quotas>> {
    visible_tenant(&st, &caller, &id).await?;
    if !caller.is_system_admin() {
        return Err(Problem::forbidden(
            "only a system admin changes a tenant's quotas",
        ));
    }
    let wanted = [
        (Kind::Vpcs, req.vpcs),
        (Kind::Subnets, req.subnets),
        (Kind::Nics, req.nics),
        (Kind::SecurityGroups, req.security_groups),
        (Kind::SecurityGroupRules, req.security_group_rules),
        (Kind::Eips, req.eips),
        (Kind::NatGateways, req.nat_gateways),
    ];
    for (k, v) in wanted {
        if v.is_some_and(|v| v > MAX_LIMIT) {
            return Err(Problem::invalid(
                k.name(),
                format!("`{}` is at most {MAX_LIMIT}", k.name()),
            ));
        }
    }
    let store = st.store.as_ref();
    let id = &id;
    db::retry("change the quotas", || async move {
        let (mut limits, rev) = limits(store, id).await?;
        for (k, v) in wanted {
            if let Some(v) = v {
                match k {
                    Kind::Vpcs => limits.vpcs = v,
                    Kind::Subnets => limits.subnets = v,
                    Kind::Nics => limits.nics = v,
                    Kind::SecurityGroups => limits.security_groups = v,
                    Kind::SecurityGroupRules => limits.security_group_rules = v,
                    Kind::Eips => limits.eips = v,
                    Kind::NatGateways => limits.nat_gateways = v,
                }
            }
        }
        let key = limits_key(id);
        let compare = vec![
            Compare::mod_revision_is(&key, rev),
            db::created_at(keys::tenant(id), tenant_created(store, id).await?),
        ];
        let mut ops = vec![db::put_json(&key, &limits)?];
        // Every shard within its new budget (see the module's comment).
        let current = shards(store, id).await?;
        for kind in Kind::ALL {
            let limit = limits.get(kind);
            let have: Vec<u64> = (0..SHARDS)
                .map(|s| current.get(&(kind, s)).map_or(0, |c| c.0))
                .collect();
            // Fewest changes: over-budget shards down to their budget, the
            // excess into shards with room, what does not fit into shard 0.
            let mut want = have.clone();
            let mut excess = 0;
            for (s, w) in want.iter_mut().enumerate() {
                let b = budget(limit, s as u64);
                if *w > b {
                    excess += *w - b;
                    *w = b;
                }
            }
            for (s, w) in want.iter_mut().enumerate() {
                let room = budget(limit, s as u64).saturating_sub(*w).min(excess);
                *w += room;
                excess -= room;
            }
            want[0] += excess;
            for (s, (&w, &h)) in want.iter().zip(&have).enumerate() {
                // No compare on the shards: every charge compares the
                // limits record this transaction rewrites.
                if w != h {
                    ops.push(Op::put(
                        shard_key(id, kind, s as u64),
                        w.to_string().into_bytes(),
                    ));
                }
            }
        }
        db::commit_attempt(store, compare, ops, ()).await
    })
    .await?;
    tracing::info!("quotas changed");
    Ok(Json(show(store, id).await?))
}

async fn tenant_created(store: &dyn Store, id: &str) -> ApiResult<u64> {
    store
        .get(&keys::tenant(id))
        .await?
        .map(|kv| kv.create_revision)
        .ok_or_else(|| tenant_not_found(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_add_up_to_the_limit() {
        for limit in [0, 1, 5, 31, 32, 33, 100, 5_000, MAX_LIMIT] {
            let sum: u64 = (0..SHARDS).map(|s| budget(limit, s)).sum();
            assert_eq!(sum, limit);
        }
    }
}
