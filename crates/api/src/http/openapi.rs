//! The OpenAPI 3.1 document of the API, generated from the handlers.

use axum::Json;
use utoipa::OpenApi;

use super::{iam, nics, nodes, problem, security_groups, subnets, vpcs};
use crate::model;

#[derive(OpenApi)]
#[openapi(
    info(title = "stacknet northbound API", description = "Tenants, users and API keys; nodes, VPCs, subnets, NICs and security groups; the audit trail. Every request but this document is signed (SN1-HMAC-SHA256, see docs/api-auth.md)."),
    modifiers(&Signed),
    paths(
        iam::create_tenant, iam::list_tenants, iam::get_tenant, iam::delete_tenant,
        iam::create_user, iam::list_users, iam::get_user, iam::delete_user,
        iam::create_key, iam::list_keys, iam::delete_key, iam::list_audit,
        nodes::create, nodes::list, nodes::get, nodes::patch, nodes::delete,
        vpcs::create, vpcs::list, vpcs::get, vpcs::patch, vpcs::delete,
        subnets::create, subnets::list, subnets::get, subnets::patch, subnets::delete,
        nics::create, nics::list, nics::get, nics::patch, nics::delete,
        security_groups::create, security_groups::list, security_groups::get,
        security_groups::patch, security_groups::delete, security_groups::add_rule,
        security_groups::delete_rule,
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
        iam::CreateTenant, iam::CreateUser, iam::NewApiKey,
    )),
    tags((name = "iam"), (name = "nodes"), (name = "vpcs"), (name = "subnets"), (name = "nics"),
        (name = "security-groups"))
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

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
