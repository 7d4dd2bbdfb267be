//! `/v1/security-groups`: stateful allow-lists scoped to a VPC, and their
//! rules (`/v1/security-groups/{id}/rules`).
//!
//! A group lives in one VPC; its rules may only name groups of that VPC as
//! their remote side, and only NICs of that VPC may join it, so no rule of
//! one tenant can ever admit another's traffic by naming its group. Every
//! VPC gets a default group with it (egress to anyone, ingress from its own
//! members), deleted with the VPC.
//!
//! References to a group (a NIC joining it, a rule naming it as remote)
//! bump the group's guard key in the same transaction; a delete compares
//! that guard, so a group in use is never deleted (see [`super::db`]).

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Access, Caller};
use super::db::{self, index, Attempt};
use super::etag::{IfMatch, Tagged};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::list::{page_of, PageOf};
use super::operations::{self, DeleteParams};
use super::problem::{ApiResult, Problem};
use super::quota::{self, Kind};
use super::validate::{self, RuleSpec};
use super::{vpcs, AppState};
use crate::model::{keys, Direction, Nic, Owned, Protocol, SecurityGroup, SecurityGroupRule};
use crate::operation::{Action, Operation, Target};
use crate::store::{Compare, Op, Store};

/// Index and guard keys of security groups.
pub(super) mod sg_index {
    use crate::model::keys::INDEX;

    /// Group names, unique within a VPC.
    pub fn name(vpc_id: &str, name: &str) -> String {
        format!("{INDEX}sg-name/{vpc_id}/{name}")
    }
    /// Bumped by every NIC joining the group and every rule naming it.
    pub fn guard(id: &str) -> String {
        format!("{INDEX}guard/sg/{id}")
    }
}

/// A group as the API shows it: the stored group plus whether its last
/// change is on every node that carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroupView {
    #[serde(flatten)]
    pub group: Owned<SecurityGroup>,
    #[serde(flatten)]
    pub programming: operations::Programming,
}

impl super::etag::Revisioned for SecurityGroupView {
    fn set_revision(&mut self, revision: u64) {
        self.group.revision = revision;
    }
}

impl super::list::Listed for SecurityGroupView {
    fn id(&self) -> &str {
        &self.group.inner.id
    }
    fn name(&self) -> &str {
        &self.group.inner.name
    }
    fn tags(&self) -> &std::collections::BTreeMap<String, String> {
        &self.group.tags
    }
}

/// The name of the group every VPC gets.
pub const DEFAULT_GROUP_NAME: &str = "default";

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRule {
    pub direction: Option<Direction>,
    /// `any` if omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// TCP/UDP only. `port_range_max` defaults to `port_range_min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<u16>,
    /// ICMP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP with a type only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// An IPv4 address or CIDR; anyone if neither this nor
    /// `remote_group_id` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "192.0.2.0/24")]
    pub remote_cidr: Option<String>,
    /// A group of the same VPC: its members' addresses, kept current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl CreateRule {
    fn spec(&self) -> RuleSpec {
        RuleSpec {
            direction: self.direction,
            protocol: self.protocol,
            port_range_min: self.port_range_min,
            port_range_max: self.port_range_max,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            remote_cidr: self.remote_cidr.clone(),
            remote_group_id: self.remote_group_id.clone(),
            description: self.description.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecurityGroup {
    pub vpc_id: String,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters). On a PATCH: the new set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,

    /// Unique within the VPC.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Initial rules (none if omitted: the group then admits nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<CreateRule>>,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSecurityGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels: up to 50 `key: value` pairs (keys 1 to 128 of A-Z a-z 0-9
    /// `. _ : / -`, values up to 256 characters). On a PATCH: the new set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// POSTed the operation, signed, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// The body of `POST /v1/security-groups/{id}/rules`: a rule, and where to
/// POST the operation when it ends. (For the OpenAPI document; the handler
/// takes `callback_url` out and parses the rest as a [`CreateRule`].)
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct AddRule {
    #[serde(flatten)]
    pub rule: CreateRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupFilter {
    /// Only the groups of this VPC.
    pub vpc_id: Option<String>,
    /// Only resources with exactly this name.
    pub name: Option<String>,
    /// Only resources with these tags: `key` or `key=value`, several
    /// separated by commas (all must hold).
    pub tag: Option<String>,
    /// At most this many (1 to 1000); absent: every one (no pages).
    pub page_size: Option<u32>,
    /// From a previous page's `Next-Page-Token` (or `Link: rel=next`).
    pub page_token: Option<String>,
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("security group {id:?} not found"))
}

fn name_taken(name: &str, vpc_id: &str, owner: &str) -> Problem {
    Problem::conflict(format!(
        "VPC {vpc_id:?} already has a security group named {name:?} ({owner})"
    ))
    .with_field("name")
}

pub(super) async fn load(
    store: &dyn Store,
    id: &str,
) -> ApiResult<Option<db::Versioned<Owned<SecurityGroup>>>> {
    if !validate::is_id("sg", id) {
        return Ok(None);
    }
    db::get_json(store, &keys::security_group(id)).await
}

/// The default group of a new VPC: egress to anyone, ingress (any
/// protocol) from the group's own members.
pub(super) fn default_group(id: &str, vpc_id: &str, created_at: &str) -> SecurityGroup {
    let rule = |direction, remote_group_id: Option<String>| SecurityGroupRule {
        id: validate::new_id("sgr"),
        direction,
        protocol: Protocol::Any,
        port_range_min: None,
        port_range_max: None,
        icmp_type: None,
        icmp_code: None,
        remote_cidr: None,
        remote_group_id,
        description: String::new(),
    };
    SecurityGroup {
        id: id.to_string(),
        name: DEFAULT_GROUP_NAME.to_string(),
        vpc_id: vpc_id.to_string(),
        description: "egress to anyone, ingress from members of this group".into(),
        is_default: true,
        rules: vec![
            rule(Direction::Egress, None),
            rule(Direction::Ingress, Some(id.to_string())),
        ],
        created_at: created_at.to_string(),
    }
}

/// Checks that `group_id` is a group of `vpc_id` and returns the compare
/// and op that keep it from being deleted before the commit. `field` names
/// the request field for the error.
pub(super) async fn reference(
    store: &dyn Store,
    group_id: &str,
    vpc_id: &str,
    field: &str,
) -> ApiResult<(Compare, Op)> {
    let missing = || {
        Problem::invalid(
            field,
            format!("`{field}`: security group {group_id:?} does not exist"),
        )
    };
    let g = load(store, group_id).await?.ok_or_else(missing)?;
    if g.value.vpc_id != vpc_id {
        // Saying which VPC would tell one tenant about another's resources.
        return Err(Problem::invalid(
            field,
            format!(
                "`{field}`: security group {group_id:?} is not in VPC {vpc_id:?}; only groups \
                 of the same VPC can be used"
            ),
        ));
    }
    Ok((
        db::created_at(keys::security_group(group_id), g.create_revision),
        db::bump(sg_index::guard(group_id)),
    ))
}

/// Validates every requested rule; `at` is the field prefix per rule.
fn check_rules(reqs: &[CreateRule]) -> ApiResult<Vec<SecurityGroupRule>> {
    if reqs.len() > validate::MAX_RULES_PER_GROUP {
        return Err(Problem::invalid(
            "rules",
            format!(
                "`rules` has {} rules; a group holds at most {}",
                reqs.len(),
                validate::MAX_RULES_PER_GROUP
            ),
        ));
    }
    let mut out: Vec<SecurityGroupRule> = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let rule = validate::rule(&format!("rules[{i}]."), &r.spec())?;
        if let Some(j) = out.iter().position(|o| o.same_match(&rule)) {
            return Err(Problem::invalid(
                format!("rules[{i}]"),
                format!("`rules[{i}]` is the same rule as `rules[{j}]`"),
            ));
        }
        out.push(rule);
    }
    Ok(out)
}

#[utoipa::path(post, path = "/v1/security-groups", tag = "security-groups",
    request_body = CreateSecurityGroup,
    responses((status = 202, body = Operation), (status = 400, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(sg_id = tracing::field::Empty, vpc_id = %req.vpc_id))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSecurityGroup>,
) -> ApiResult<Response> {
    caller.tenant_scope()?;
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    validate::name("name", &req.name)?;
    let tags = req.tags.clone().unwrap_or_default();
    validate::tags(&tags)?;
    let tags = &tags;
    let description = req.description.clone().unwrap_or_default();
    validate::description("description", &description)?;
    let rules = check_rules(req.rules.as_deref().unwrap_or_default())?;
    let id = validate::new_id("sg");
    tracing::Span::current().record("sg_id", id.as_str());
    let store = st.store.as_ref();
    let created_at = validate::now_rfc3339();
    let (id, req, rules, description, created_at) = (&id, &req, &rules, &description, &created_at);
    let caller = &caller;
    let new_op = &new_op;
    let (group, op) = db::retry("create the security group", || async move {
        let missing = || {
            Problem::invalid(
                "vpc_id",
                format!("`vpc_id`: VPC {:?} does not exist", req.vpc_id),
            )
        };
        let vpc = vpcs::load(store, &req.vpc_id).await?.ok_or_else(missing)?;
        caller.check(&vpc.value.tenant_id, Access::Write, missing)?;
        let vpc_id = &vpc.value.id;
        let name_key = sg_index::name(vpc_id, &req.name);
        if let Some(owner) = db::get_text(store, &name_key).await? {
            return Err(name_taken(&req.name, vpc_id, &owner));
        }
        let key = keys::security_group(id);
        let mut compare = vec![
            db::created_at(keys::vpc(vpc_id), vpc.create_revision),
            Compare::absent(&key),
            Compare::absent(&name_key),
        ];
        let group = Owned::new(
            vpc.value.tenant_id.as_str(),
            SecurityGroup {
                id: id.clone(),
                name: req.name.clone(),
                vpc_id: vpc_id.clone(),
                description: description.clone(),
                is_default: false,
                rules: rules.clone(),
                created_at: created_at.clone(),
            },
        );
        let group = group.with_tags(tags.clone());
        let mut ops = vec![
            db::put_json(&key, &group)?,
            Op::put(name_key, id.as_bytes().to_vec()),
            // The VPC's delete compares its guard: it sees this group.
            db::bump(index::vpc_guard(vpc_id)),
        ];
        let (c, o) = quota::charge(
            store,
            &group.tenant_id,
            &[
                (Kind::SecurityGroups, 1),
                (Kind::SecurityGroupRules, rules.len() as i64),
            ],
        )
        .await?;
        compare.extend(c);
        ops.extend(o);
        for (i, r) in rules.iter().enumerate() {
            if let Some(remote) = &r.remote_group_id {
                let field = format!("rules[{i}].remote_group_id");
                let (c, op) = reference(store, remote, vpc_id, &field).await?;
                compare.push(c);
                ops.push(op);
            }
        }
        let op = new_op.stage(
            &group.tenant_id,
            Action::Create,
            Target::security_group(id),
            &mut compare,
            &mut ops,
        )?;
        Ok(if db::commit(store, compare, ops).await? {
            Attempt::Done((group, op))
        } else {
            Attempt::Retry
        })
    })
    .await?;
    tracing::info!(rules = group.rules.len(), op_id = %op.id, "security group created");
    Ok(operations::accepted(op))
}

#[utoipa::path(get, path = "/v1/security-groups", tag = "security-groups", params(GroupFilter),
    responses((status = 200, body = [SecurityGroupView]), (status = 400, body = Problem)))]
#[instrument(skip_all)]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(f): ApiQuery<GroupFilter>,
) -> ApiResult<PageOf<SecurityGroupView>> {
    caller.tenant_scope()?;
    let all: Vec<Owned<SecurityGroup>> =
        db::list_revisioned(st.store.as_ref(), keys::SECURITY_GROUPS).await?;
    let mut programming = operations::programming_all(st.store.as_ref()).await?;
    let seen = all
        .into_iter()
        .filter(|g| caller.sees(&g.tenant_id))
        .filter(|g| f.vpc_id.as_ref().is_none_or(|v| &g.vpc_id == v))
        .map(|group| SecurityGroupView {
            programming: programming
                .remove(&group.id)
                .unwrap_or(operations::Programming {
                    status: crate::operation::ProgrammingStatus::Programmed,
                    last_operation_id: None,
                }),
            group,
        })
        .collect();
    let (items, next) = page_of!(f).apply("security-groups", &format!("{:?}", f.vpc_id), seen)?;
    Ok(PageOf { items, next, uri })
}

#[utoipa::path(get, path = "/v1/security-groups/{id}", tag = "security-groups",
    params(("id" = String, Path)),
    responses((status = 200, body = SecurityGroupView), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(sg_id = %id))]
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Tagged<SecurityGroupView>> {
    let g = load(st.store.as_ref(), &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    caller.check(&g.value.tenant_id, Access::Read, || not_found(&id))?;
    let programming = operations::programming_of(st.store.as_ref(), &id).await?;
    Ok(Tagged(
        SecurityGroupView {
            group: g.value,
            programming,
        },
        g.mod_revision,
    ))
}

#[utoipa::path(patch, path = "/v1/security-groups/{id}", tag = "security-groups",
    request_body = PatchSecurityGroup, params(("id" = String, Path)),
    responses((status = 202, body = Operation), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(sg_id = %id))]
pub async fn patch(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiJson(req): ApiJson<PatchSecurityGroup>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(req.callback_url.as_deref())?;
    if let Some(name) = &req.name {
        validate::name("name", name)?;
    }
    if let Some(t) = &req.tags {
        validate::tags(t)?;
    }
    if let Some(d) = &req.description {
        validate::description("description", d)?;
    }
    let store = st.store.as_ref();
    let (id, req, caller, if_match) = (&id, &req, &caller, &if_match);
    let new_op = &new_op;
    let (group, op) = db::retry("update the security group", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        let mut g = cur.value.clone();
        let key = keys::security_group(id);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = vec![];
        if let Some(name) = req.name.as_ref().filter(|n| **n != g.name) {
            let new_key = sg_index::name(&g.vpc_id, name);
            if let Some(owner) = db::get_text(store, &new_key).await? {
                return Err(name_taken(name, &g.vpc_id, &owner));
            }
            let old_key = sg_index::name(&g.vpc_id, &g.name);
            if db::get_text(store, &old_key).await?.as_deref() == Some(id.as_str()) {
                ops.push(Op::delete(old_key));
            }
            compare.push(Compare::absent(&new_key));
            ops.push(Op::put(new_key, id.as_bytes().to_vec()));
            g.name = name.clone();
        }
        if let Some(d) = &req.description {
            g.description = d.clone();
        }
        if let Some(t) = &req.tags {
            g.tags = t.clone();
        }
        // A PATCH that changes nothing still gets its operation (ended
        // at once by flowctl): one answer shape for every PATCH.
        if g != cur.value {
            ops.push(db::put_json(&key, &g)?);
        }
        let op = new_op.stage(
            &g.tenant_id,
            Action::Update,
            Target::security_group(id),
            &mut compare,
            &mut ops,
        )?;
        Ok(if db::commit(store, compare, ops).await? {
            Attempt::Done((g, op))
        } else {
            Attempt::Retry
        })
    })
    .await?;
    tracing::info!(name = %group.name, op_id = %op.id, "security group updated");
    Ok(operations::accepted(op))
}

#[utoipa::path(delete, path = "/v1/security-groups/{id}", tag = "security-groups",
    params(("id" = String, Path), DeleteParams),
    responses((status = 202, body = Operation), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
#[instrument(skip_all, fields(sg_id = %id))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(q.callback_url.as_deref())?;
    let store = st.store.as_ref();
    let (id, caller, if_match) = (&id, &caller, &if_match);
    let new_op = &new_op;
    let op = db::retry("delete the security group", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        if_match.check(cur.mod_revision)?;
        if cur.value.is_default {
            return Err(Problem::conflict(format!(
                "security group {id:?} is the default group of VPC {:?}; it is deleted with \
                 the VPC",
                cur.value.vpc_id
            )));
        }
        // Guard first, then the references: one added after this read bumps
        // the guard and fails the compare.
        let guard = sg_index::guard(id);
        let guard_rev = db::mod_revision(store, &guard).await?;
        let users = users_of(store, id).await?;
        if !users.is_empty() {
            return Err(Problem::conflict(format!(
                "security group {id:?} is still used by {}; remove those first",
                db::in_use("NICs or groups", &users)
            )));
        }
        let key = keys::security_group(id);
        let mut ops = vec![Op::delete(&key), Op::delete(&guard)];
        let (qc, qo) = quota::charge(
            store,
            &cur.value.tenant_id,
            &[
                (Kind::SecurityGroups, -1),
                (Kind::SecurityGroupRules, -(cur.value.rules.len() as i64)),
            ],
        )
        .await?;
        ops.extend(qo);
        let name_key = sg_index::name(&cur.value.vpc_id, &cur.value.name);
        if db::get_text(store, &name_key).await?.as_deref() == Some(id.as_str()) {
            ops.push(Op::delete(name_key));
        }
        let mut compare: Vec<Compare> = vec![
            Compare::mod_revision_is(&key, cur.mod_revision),
            Compare::mod_revision_is(&guard, guard_rev),
        ]
        .into_iter()
        .chain(qc)
        .collect();
        let op = new_op.stage(
            &cur.value.tenant_id,
            Action::Delete,
            Target::security_group(id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(op_id = %op.id, "security group deleted");
    Ok(operations::accepted(op))
}

/// NICs that are members of `id` and other groups whose rules name it.
async fn users_of(store: &dyn Store, id: &str) -> ApiResult<Vec<String>> {
    let nics: Vec<Nic> = db::list_json(store, keys::NICS).await?;
    let groups: Vec<SecurityGroup> = db::list_json(store, keys::SECURITY_GROUPS).await?;
    let mut out: Vec<String> = nics
        .into_iter()
        .filter(|n| n.security_groups.iter().any(|g| g == id))
        .map(|n| n.id)
        .collect();
    out.extend(
        groups
            .into_iter()
            .filter(|g| g.id != id)
            .filter(|g| {
                g.rules
                    .iter()
                    .any(|r| r.remote_group_id.as_deref() == Some(id))
            })
            .map(|g| g.id),
    );
    Ok(out)
}

/// Non-default groups of `vpc_id` (what blocks deleting the VPC).
pub(super) async fn groups_of(store: &dyn Store, vpc_id: &str) -> ApiResult<Vec<SecurityGroup>> {
    let all: Vec<SecurityGroup> = db::list_json(store, keys::SECURITY_GROUPS).await?;
    Ok(all.into_iter().filter(|g| g.vpc_id == vpc_id).collect())
}

#[utoipa::path(post, path = "/v1/security-groups/{id}/rules", tag = "security-groups",
    request_body = AddRule, params(("id" = String, Path)),
    responses((status = 202, body = Operation), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
#[instrument(skip_all, fields(sg_id = %id, rule_id = tracing::field::Empty))]
pub async fn add_rule(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(mut body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    // `callback_url` is the request's, not the rule's: taken out before
    // the rest is parsed as strictly as a rule in a group's `rules`.
    let callback = match body.remove("callback_url") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(u)) => Some(u),
        Some(_) => {
            return Err(
                Problem::bad_request("field `callback_url`: expected a string")
                    .with_field("callback_url"),
            )
        }
    };
    let new_op = operations::NewOp::new(callback.as_deref())?;
    let raw = serde_json::to_vec(&body)
        .map_err(|_| Problem::bad_request("the request body could not be re-encoded"))?;
    let req: CreateRule = super::extract::parse_json(&raw)?;
    let rule = validate::rule("", &req.spec())?;
    tracing::Span::current().record("rule_id", rule.id.as_str());
    let store = st.store.as_ref();
    let (id, rule, caller) = (&id, &rule, &caller);
    let new_op = &new_op;
    let op = db::retry("add the rule", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        let mut g = cur.value.clone();
        if let Some(same) = g.rules.iter().find(|r| r.same_match(rule)) {
            return Err(Problem::conflict(format!(
                "security group {id:?} already has this rule ({})",
                same.id
            )));
        }
        if g.rules.len() >= validate::MAX_RULES_PER_GROUP {
            return Err(Problem::conflict(format!(
                "security group {id:?} already has {} rules, the most a group may hold",
                g.rules.len()
            )));
        }
        let key = keys::security_group(id);
        let mut compare = vec![Compare::mod_revision_is(&key, cur.mod_revision)];
        let mut ops = vec![];
        if let Some(remote) = rule.remote_group_id.as_ref().filter(|r| *r != id) {
            let (c, op) = reference(store, remote, &g.vpc_id, "remote_group_id").await?;
            compare.push(c);
            ops.push(op);
        }
        g.rules.push(rule.clone());
        ops.push(db::put_json(&key, &g)?);
        // A default group is part of its VPC: its rules are not counted.
        let n = i64::from(!g.is_default);
        let (c, o) = quota::charge(store, &g.tenant_id, &[(Kind::SecurityGroupRules, n)]).await?;
        compare.extend(c);
        ops.extend(o);
        let op = new_op.stage(
            &g.tenant_id,
            Action::Create,
            Target::security_group_rule(id, &rule.id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(op_id = %op.id, "security group rule added");
    Ok(operations::accepted(op))
}

#[utoipa::path(get, path = "/v1/security-groups/{id}/rules/{rule_id}", tag = "security-groups",
    params(("id" = String, Path), ("rule_id" = String, Path)),
    responses((status = 200, body = SecurityGroupRule), (status = 404, body = Problem)))]
#[instrument(skip_all, fields(sg_id = %path.0, rule_id = %path.1))]
pub async fn get_rule(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<(String, String)>,
) -> ApiResult<Json<SecurityGroupRule>> {
    let (id, rule_id) = (&path.0, &path.1);
    let g = load(st.store.as_ref(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    caller.check(&g.value.tenant_id, Access::Read, || not_found(id))?;
    g.value
        .inner
        .rules
        .into_iter()
        .find(|r| r.id == *rule_id)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("security group {id:?} has no rule {rule_id:?}")))
}

#[utoipa::path(delete, path = "/v1/security-groups/{id}/rules/{rule_id}", tag = "security-groups",
    params(("id" = String, Path), ("rule_id" = String, Path), DeleteParams),
    responses((status = 202, body = Operation), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
#[instrument(skip_all, fields(sg_id = %path.0, rule_id = %path.1))]
pub async fn delete_rule(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    let new_op = operations::NewOp::new(q.callback_url.as_deref())?;
    let store = st.store.as_ref();
    let (id, rule_id, caller) = (&path.0, &path.1, &caller);
    let new_op = &new_op;
    let op = db::retry("delete the rule", || async move {
        let cur = load(store, id).await?.ok_or_else(|| not_found(id))?;
        caller.check(&cur.value.tenant_id, Access::Write, || not_found(id))?;
        let mut g = cur.value.clone();
        let before = g.rules.len();
        g.rules.retain(|r| r.id != *rule_id);
        if g.rules.len() == before {
            return Err(Problem::not_found(format!(
                "security group {id:?} has no rule {rule_id:?}"
            )));
        }
        let key = keys::security_group(id);
        let (qc, qo) = quota::charge(
            store,
            &g.tenant_id,
            &[(Kind::SecurityGroupRules, -i64::from(!g.is_default))],
        )
        .await?;
        let mut compare: Vec<Compare> = [Compare::mod_revision_is(&key, cur.mod_revision)]
            .into_iter()
            .chain(qc)
            .collect();
        let mut ops: Vec<Op> = [db::put_json(&key, &g)?].into_iter().chain(qo).collect();
        let op = new_op.stage(
            &g.tenant_id,
            Action::Delete,
            Target::security_group_rule(id, rule_id),
            &mut compare,
            &mut ops,
        )?;
        db::commit_attempt(store, compare, ops, op).await
    })
    .await?;
    tracing::info!(op_id = %op.id, "security group rule deleted");
    Ok(operations::accepted(op))
}
