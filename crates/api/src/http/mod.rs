//! The northbound REST server: JSON under `/v1`, errors as
//! `application/problem+json`, an OpenAPI document at `/v1/openapi.json`.
//!
//! [`router`] builds the whole API over a [`Store`]; flowctl embeds it in its
//! all-in-one process, tests drive it in-process. Handlers validate first,
//! then write in one compare-and-swap transaction, so a failed request
//! changes nothing (see [`db`] for how the invariants are kept).

pub mod auth;
mod db;
pub mod eips;
mod etag;
pub mod external_networks;
mod extract;
pub mod iam;
mod idempotency;
mod list;
pub mod nat_gateways;
pub mod nics;
pub mod nodes;
mod openapi;
pub mod operations;
pub mod problem;
pub mod quota;
pub mod ratelimit;
pub mod security_groups;
pub mod subnets;
mod validate;
pub mod vpcs;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::store::Store;
pub use problem::Problem;

pub use openapi::ApiDoc;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Arc<auth::AuthConfig>,
}

/// The whole API. Every `/v1` route but the OpenAPI document needs a
/// signed request (see [`auth`]).
pub fn router(store: Arc<dyn Store>, auth: Arc<auth::AuthConfig>) -> Router {
    let state = AppState { store, auth };
    let v1 = Router::new()
        .route("/tenants", get(iam::list_tenants).post(iam::create_tenant))
        .route(
            "/tenants/{id}",
            get(iam::get_tenant)
                .patch(iam::patch_tenant)
                .delete(iam::delete_tenant),
        )
        .route("/tenants/{id}/quotas", get(quota::get).patch(quota::patch))
        .route(
            "/tenants/{id}/callback-secret",
            get(operations::get_secret).post(operations::rotate_secret),
        )
        .route("/operations", get(operations::list))
        .route("/operations/{id}", get(operations::get))
        .route("/users", get(iam::list_users).post(iam::create_user))
        .route(
            "/users/{id}",
            get(iam::get_user)
                .patch(iam::patch_user)
                .delete(iam::delete_user),
        )
        .route(
            "/users/{id}/keys",
            get(iam::list_keys).post(iam::create_key),
        )
        .route(
            "/users/{id}/keys/{key_id}",
            axum::routing::delete(iam::delete_key),
        )
        .route("/audit", get(iam::list_audit))
        .route("/nodes", get(nodes::list).post(nodes::create))
        .route(
            "/nodes/{name}",
            get(nodes::get).patch(nodes::patch).delete(nodes::delete),
        )
        .route("/vpcs", get(vpcs::list).post(vpcs::create))
        .route(
            "/vpcs/{id}",
            get(vpcs::get).patch(vpcs::patch).delete(vpcs::delete),
        )
        .route("/subnets", get(subnets::list).post(subnets::create))
        .route(
            "/subnets/{id}",
            get(subnets::get)
                .patch(subnets::patch)
                .delete(subnets::delete),
        )
        .route("/nics", get(nics::list).post(nics::create))
        .route(
            "/nics/{id}",
            get(nics::get).patch(nics::patch).delete(nics::delete),
        )
        .route(
            "/security-groups",
            get(security_groups::list).post(security_groups::create),
        )
        .route(
            "/security-groups/{id}",
            get(security_groups::get)
                .patch(security_groups::patch)
                .delete(security_groups::delete),
        )
        .route(
            "/security-groups/{id}/rules",
            axum::routing::post(security_groups::add_rule),
        )
        .route(
            "/security-groups/{id}/rules/{rule_id}",
            get(security_groups::get_rule).delete(security_groups::delete_rule),
        )
        .route(
            "/external-networks",
            get(external_networks::list).post(external_networks::create),
        )
        .route(
            "/external-networks/{id}",
            get(external_networks::get).delete(external_networks::delete),
        )
        .route("/eips", get(eips::list).post(eips::create))
        .route("/eips/{id}", get(eips::get).delete(eips::delete))
        .route("/eips/{id}/bind", axum::routing::post(eips::bind))
        .route("/eips/{id}/unbind", axum::routing::post(eips::unbind))
        .route(
            "/nat-gateways",
            get(nat_gateways::list).post(nat_gateways::create),
        )
        .route(
            "/nat-gateways/{id}",
            get(nat_gateways::get).delete(nat_gateways::delete),
        )
        .route(
            "/nat-gateways/{id}/snat-rules",
            axum::routing::post(nat_gateways::add_snat_rule),
        )
        .route(
            "/nat-gateways/{id}/snat-rules/{rule_id}",
            axum::routing::delete(nat_gateways::delete_snat_rule),
        )
        .route(
            "/nat-gateways/{id}/dnat-rules",
            axum::routing::post(nat_gateways::add_dnat_rule),
        )
        .route(
            "/nat-gateways/{id}/dnat-rules/{rule_id}",
            axum::routing::delete(nat_gateways::delete_dnat_rule),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Ok when the store answers.
async fn healthz(State(st): State<AppState>) -> Result<Json<Value>, Problem> {
    let revision = st.store.revision().await?;
    Ok(Json(json!({ "status": "ok", "revision": revision })))
}

async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no resource at {}", uri.path()))
}

async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}

#[cfg(test)]
mod tests;
