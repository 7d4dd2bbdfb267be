//! The OpenAPI 3.1 document of the API, generated from the handlers.

use axum::Json;
use utoipa::OpenApi;

use super::{
    eips, external_networks, iam, nat_gateways, nics, nodes, operations, problem, quota,
    security_groups, subnets, vpcs,
};
use crate::{model, operation};

#[derive(OpenApi)]
#[openapi(
    info(title = "stacknet northbound API", description = "Tenants, users and API keys; nodes, VPCs, subnets, NICs and security groups; the audit trail. Every request but this document is signed (SN1-HMAC-SHA256, see docs/api-auth.md)."),
    modifiers(&Signed, &Idempotent),
    paths(
        iam::create_tenant, iam::list_tenants, iam::get_tenant, iam::delete_tenant,
        iam::create_user, iam::list_users, iam::get_user, iam::delete_user,
        iam::create_key, iam::list_keys, iam::delete_key, iam::list_audit,
        iam::patch_tenant, iam::patch_user,
        quota::get, quota::patch,
        nodes::create, nodes::list, nodes::get, nodes::patch, nodes::delete,
        vpcs::create, vpcs::list, vpcs::get, vpcs::patch, vpcs::delete,
        subnets::create, subnets::list, subnets::get, subnets::patch, subnets::delete,
        nics::create, nics::list, nics::get, nics::patch, nics::delete,
        security_groups::create, security_groups::list, security_groups::get,
        security_groups::patch, security_groups::delete, security_groups::add_rule,
        security_groups::delete_rule, security_groups::get_rule,
        operations::get, operations::list, operations::get_secret, operations::rotate_secret,
        external_networks::create, external_networks::list, external_networks::get,
        external_networks::delete,
        eips::create, eips::list, eips::get, eips::bind, eips::unbind, eips::delete,
        nat_gateways::create, nat_gateways::list, nat_gateways::get, nat_gateways::delete,
        nat_gateways::add_snat_rule, nat_gateways::delete_snat_rule,
        nat_gateways::add_dnat_rule, nat_gateways::delete_dnat_rule,
    ),
    components(schemas(
        model::Node, model::NodeRole, model::Vpc, model::Subnet, model::Nic,
        model::NicStatus, nics::NicView, problem::Problem,
        nodes::CreateNode, nodes::PatchNode, vpcs::CreateVpc, vpcs::PatchVpc,
        subnets::CreateSubnet, subnets::PatchSubnet, nics::CreateNic, nics::PatchNic,
        nics::AddressPairRequest, model::AllowedAddressPair, model::SecurityGroup,
        model::SecurityGroupRule, model::Direction, model::Protocol,
        security_groups::CreateSecurityGroup, security_groups::PatchSecurityGroup,
        security_groups::CreateRule,
        model::Tenant, model::User, model::Role, model::ApiKey, model::AuditRecord,
        iam::CreateTenant, iam::CreateUser, iam::NewApiKey, iam::PatchTenant, iam::PatchUser,
        quota::Limits, quota::PatchQuotas, quota::Quotas,
        operation::Operation, operation::OperationState, operation::Action, operation::Target,
        operation::OperationError, operation::CallbackStatus, operation::CallbackState,
        operations::CallbackSecret, security_groups::AddRule, security_groups::SecurityGroupView,
        operations::Programming, operation::ProgrammingStatus,
        nodes::NodeView, model::AddressRange, model::ExternalNetwork, model::Eip,
        model::L4Protocol, model::SnatRule, model::DnatRule, model::NatGateway,
        external_networks::CreateExternalNetwork, external_networks::RangeRequest,
        eips::CreateEip, eips::BindEip, eips::EipView,
        nat_gateways::CreateNatGateway, nat_gateways::CreateSnatRule,
        nat_gateways::CreateDnatRule, nat_gateways::NatGatewayView,
    )),
    tags((name = "iam"), (name = "nodes"), (name = "vpcs"), (name = "subnets"), (name = "nics"),
        (name = "security-groups"), (name = "external-networks"), (name = "eips"),
        (name = "nat-gateways"), (name = "operations"))
)]
pub struct ApiDoc;

/// Declares the signature scheme and adds the 401 every signed operation
/// can answer (and the 403 of a role that may not act).
struct Signed;

impl utoipa::Modify for Signed {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
        use utoipa::openapi::{Ref, RefOr};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "sn1",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "SN1-HMAC-SHA256 Credential=<key id>, Timestamp=<unix s>, Nonce=<nonce>, \
                 Signature=<hex>; see docs/api-auth.md",
            ))),
        );
        doc.security = Some(vec![SecurityRequirement::new("sn1", Vec::<String>::new())]);
        for item in doc.paths.paths.values_mut() {
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                for code in ["401", "403"] {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| {
                            RefOr::T(
                                utoipa::openapi::ResponseBuilder::new()
                                    .description(if code == "401" {
                                        "missing, stale, replayed or badly signed credentials"
                                    } else {
                                        "the caller's role does not allow this"
                                    })
                                    .content(
                                        problem::PROBLEM_JSON,
                                        utoipa::openapi::ContentBuilder::new()
                                            .schema(Some(Ref::from_schema_name("Problem")))
                                            .build(),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// Every create takes an `Idempotency-Key` header (or `client_token` in
/// its body) and may answer 409 (in flight) or 422 (the key was used for
/// another request); every signed operation may answer 429 (the tenant's
/// rate limit). See [`super::idempotency`] and [`super::ratelimit`].
struct Idempotent;

impl utoipa::Modify for Idempotent {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        use utoipa::openapi::{Ref, RefOr, Required};
        let key_schema = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[\\x20-\\x7e]+$"))
                .build()
        };
        let problem = |what: &str| {
            RefOr::T(
                utoipa::openapi::ResponseBuilder::new()
                    .description(what)
                    .content(
                        problem::PROBLEM_JSON,
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in doc.paths.paths.values_mut() {
            if let Some(op) = item.post.as_mut() {
                op.parameters.get_or_insert_with(Vec::new).push(
                    ParameterBuilder::new()
                        .name("Idempotency-Key")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "Makes the create safe to retry: the same key and request get \
                             the original answer for at least 24 h (also as `client_token` \
                             in the body)",
                        ))
                        .schema(Some(key_schema()))
                        .build(),
                );
                let r = &mut op.responses.responses;
                r.entry("409".into()).or_insert_with(|| {
                    problem("a clash, or a request with this idempotency key is in flight")
                });
                r.entry("422".into()).or_insert_with(|| {
                    problem("invalid, or the idempotency key was used for another request")
                });
                r.entry("400".into())
                    .or_insert_with(|| problem("malformed request or idempotency key"));
            }
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("429".into())
                    .or_insert_with(|| problem("the tenant is over its request rate limit"));
            }
        }
        // Revisioned resources: ETag on answers that carry one, If-Match
        // (412) on changes.
        for (path, item) in doc.paths.paths.iter_mut() {
            let single = [
                "/v1/vpcs/{id}",
                "/v1/subnets/{id}",
                "/v1/nics/{id}",
                "/v1/security-groups/{id}",
                "/v1/external-networks/{id}",
                "/v1/eips/{id}",
                "/v1/nat-gateways/{id}",
            ]
            .contains(&path.as_str());
            let collection = [
                "/v1/vpcs",
                "/v1/subnets",
                "/v1/nics",
                "/v1/security-groups",
                "/v1/external-networks",
                "/v1/eips",
                "/v1/nat-gateways",
            ]
            .contains(&path.as_str());
            let tagged: Vec<(&mut utoipa::openapi::path::Operation, &str)> = if single {
                [(item.get.as_mut(), "200"), (item.patch.as_mut(), "200")]
                    .into_iter()
                    .filter_map(|(o, c)| o.map(|o| (o, c)))
                    .collect()
            } else if collection {
                item.post.as_mut().map(|o| (o, "201")).into_iter().collect()
            } else {
                vec![]
            };
            for (op, code) in tagged {
                if let Some(RefOr::T(resp)) = op.responses.responses.get_mut(code) {
                    resp.headers.insert(
                        "ETag".into(),
                        utoipa::openapi::header::HeaderBuilder::new()
                            .schema(ObjectBuilder::new().schema_type(Type::String))
                            .description(Some("the resource's revision in quotes"))
                            .build(),
                    );
                }
            }
            if let Some(RefOr::T(resp)) = item
                .get
                .as_mut()
                .filter(|_| collection)
                .and_then(|op| op.responses.responses.get_mut("200"))
            {
                for (name, what) in [
                    (
                        "Link",
                        "`<uri of the next page>; rel=\"next\"` when there is one",
                    ),
                    (
                        "Next-Page-Token",
                        "the `page_token` of the next page, when there is one",
                    ),
                ] {
                    resp.headers.insert(
                        name.into(),
                        utoipa::openapi::header::HeaderBuilder::new()
                            .schema(ObjectBuilder::new().schema_type(Type::String))
                            .description(Some(what))
                            .build(),
                    );
                }
            }
            if !single {
                continue;
            }
            for op in [item.patch.as_mut(), item.delete.as_mut()]
                .into_iter()
                .flatten()
            {
                op.parameters.get_or_insert_with(Vec::new).push(
                    ParameterBuilder::new()
                        .name("If-Match")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "Change only if the resource is still at this ETag (or `*`)",
                        ))
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                );
                op.responses
                    .responses
                    .entry("412".into())
                    .or_insert_with(|| {
                        problem("If-Match does not match the resource's current revision")
                    });
            }
        }
        // Every operation may answer a malformed request (400), those with
        // a body one that is not JSON (415); every problem is
        // `application/problem+json`, not `application/json`.
        for item in doc.paths.paths.values_mut() {
            let has_body = |o: &utoipa::openapi::path::Operation| o.request_body.is_some();
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                let body = has_body(op);
                let r = &mut op.responses.responses;
                r.entry("400".into())
                    .or_insert_with(|| problem("malformed request"));
                if body {
                    r.entry("415".into())
                        .or_insert_with(|| problem("the body is not application/json"));
                }
                for resp in r.values_mut() {
                    let RefOr::T(resp) = resp else { continue };
                    let is_problem = resp.content.get("application/json").is_some_and(|c| {
                        matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
                    });
                    if is_problem {
                        if let Some(c) = resp.content.shift_remove("application/json") {
                            resp.content.insert(problem::PROBLEM_JSON.into(), c);
                        }
                    }
                }
            }
        }
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        // Top-level create bodies only (CreateRule is also nested in
        // CreateSecurityGroup, where the field is not accepted).
        for name in [
            "CreateVpc",
            "CreateSubnet",
            "CreateNic",
            "CreateSecurityGroup",
            "CreateExternalNetwork",
            "CreateEip",
            "CreateNatGateway",
            "CreateNode",
            "CreateTenant",
            "CreateUser",
        ] {
            if let Some(RefOr::T(Schema::Object(obj))) = components.schemas.get_mut(name) {
                obj.properties.insert(
                    "client_token".into(),
                    RefOr::T(Schema::Object(key_schema())),
                );
            }
        }
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
