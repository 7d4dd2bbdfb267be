//! The OpenAPI 3.1 document of the API, generated from the handlers.

use axum::Json;
use utoipa::OpenApi;

use super::{nics, nodes, problem, security_groups, subnets, vpcs};
use crate::model;

#[derive(OpenApi)]
#[openapi(
    info(title = "stacknet northbound API", description = "Nodes, VPCs, subnets, NICs and security groups."),
    paths(
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
    )),
    tags((name = "nodes"), (name = "vpcs"), (name = "subnets"), (name = "nics"),
        (name = "security-groups"))
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
