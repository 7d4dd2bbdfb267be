//! The OpenAPI 3.1 document of the API, generated from the handlers.

use axum::Json;
use utoipa::OpenApi;

use super::{nics, nodes, problem, subnets, vpcs};
use crate::model;

#[derive(OpenApi)]
#[openapi(
    info(title = "stacknet northbound API", description = "Nodes, VPCs, subnets and NICs."),
    paths(
        nodes::create, nodes::list, nodes::get, nodes::patch, nodes::delete,
        vpcs::create, vpcs::list, vpcs::get, vpcs::patch, vpcs::delete,
        subnets::create, subnets::list, subnets::get, subnets::patch, subnets::delete,
        nics::create, nics::list, nics::get, nics::patch, nics::delete,
    ),
    components(schemas(
        model::Node, model::NodeRole, model::Vpc, model::Subnet, model::Nic,
        model::NicStatus, nics::NicView, problem::Problem,
        nodes::CreateNode, nodes::PatchNode, vpcs::CreateVpc, vpcs::PatchVpc,
        subnets::CreateSubnet, subnets::PatchSubnet, nics::CreateNic, nics::PatchNic,
    )),
    tags((name = "nodes"), (name = "vpcs"), (name = "subnets"), (name = "nics"))
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
