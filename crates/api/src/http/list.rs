//! Lists: filters on `name` and `tag`, pages of `page_size` in id order
//! (stable: ids never change), an opaque `page_token` for the next page.
//!
//! The body stays a JSON array (existing clients keep working); the next
//! page is named by `Link: <...>; rel="next"` and `Next-Page-Token`. The
//! token is hex of (kind, a hash of the filters, the last id given): a
//! token from another list, from other filters or not made here is a 400.
//! Each page still reads the kind's whole prefix (the store has no range
//! start); fine at the sizes one tenant has, to revisit with a start key.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::problem::{ApiResult, Problem};
use crate::model::Owned;

/// The largest `page_size` accepted. Without `page_size` a list is not
/// paged (every item, as before pages existed: clients that list
/// everything keep working).
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The list parameters every list takes (each filter struct carries them).
pub struct Page<'a> {
    pub page_size: Option<u32>,
    pub page_token: Option<&'a str>,
    pub name: Option<&'a str>,
    /// `key` (has the tag) or `key=value`; several separated by commas,
    /// all must hold.
    pub tag: Option<&'a str>,
}

/// The [`Page`] of a filter struct that carries the list parameters.
macro_rules! page_of {
    ($f:expr) => {
        $crate::http::list::Page {
            page_size: $f.page_size,
            page_token: $f.page_token.as_deref(),
            name: $f.name.as_deref(),
            tag: $f.tag.as_deref(),
        }
    };
}
pub(crate) use page_of;

/// Something a list shows.
pub trait Listed {
    fn id(&self) -> &str;
    fn name(&self) -> &str;
    fn tags(&self) -> &BTreeMap<String, String>;
}

impl<'a> Page<'a> {
    /// Filters, orders by id and cuts one page of `items` (all the caller
    /// may see). `kind` and `filters` (the list's other query parameters)
    /// bind the token to this list.
    pub fn apply<T: Listed>(
        &self,
        kind: &str,
        filters: &str,
        mut items: Vec<T>,
    ) -> ApiResult<(Vec<T>, Option<String>)> {
        let size = match self.page_size {
            None if self.page_token.is_none() => u32::MAX,
            None => MAX_PAGE_SIZE,
            Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            Some(_) => {
                return Err(Problem::bad_request(format!(
                    "`page_size` must be 1 to {MAX_PAGE_SIZE}"
                ))
                .with_field("page_size"))
            }
        } as usize;
        let tags = parse_tag_filter(self.tag)?;
        let bound = self.binding(kind, filters);
        let after = self
            .page_token
            .map(|t| decode_token(t, &bound))
            .transpose()?;
        items.retain(|i| {
            self.name.is_none_or(|n| i.name() == n)
                && tags.iter().all(|(k, v)| match v {
                    Some(v) => i.tags().get(*k).is_some_and(|x| x == v),
                    None => i.tags().contains_key(*k),
                })
                && after.as_deref().is_none_or(|a| i.id() > a)
        });
        items.sort_by(|a, b| a.id().cmp(b.id()));
        let next = (items.len() > size).then(|| encode_token(&bound, items[size - 1].id()));
        items.truncate(size);
        Ok((items, next))
    }

    /// What a token is bound to: the list and its filters (not the page
    /// size, which may change between pages).
    fn binding(&self, kind: &str, filters: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            kind,
            filters,
            self.name.unwrap_or(""),
            self.tag.unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..8])
    }
}

fn encode_token(bound: &str, last_id: &str) -> String {
    hex::encode(format!("{bound}:{last_id}"))
}

fn decode_token(token: &str, bound: &str) -> ApiResult<String> {
    let bad = || {
        Problem::bad_request(
            "`page_token` is not a token of this list with these filters; start again without it",
        )
        .with_field("page_token")
    };
    let raw = hex::decode(token).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (b, id) = raw.split_once(':').ok_or_else(bad)?;
    // Ids are made of these (validate::new_id); anything else was not
    // made here.
    let id_shape = id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
    if b != bound || id.is_empty() || !id_shape {
        return Err(bad());
    }
    Ok(id.to_string())
}

fn parse_tag_filter(tag: Option<&str>) -> ApiResult<Vec<(&str, Option<&str>)>> {
    let Some(tag) = tag else {
        return Ok(vec![]);
    };
    tag.split(',')
        .map(|t| {
            let (k, v) = match t.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (t, None),
            };
            if !super::validate::is_tag_key(k) {
                return Err(Problem::bad_request(format!(
                    "`tag`: {k:?} is not a tag key (1 to 128 of A-Z a-z 0-9 . _ : / -)"
                ))
                .with_field("tag"));
            }
            Ok((k, v))
        })
        .collect()
}

/// A page: the JSON array, and where the next one is.
pub struct PageOf<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
    pub uri: Uri,
}

impl<T: Serialize> IntoResponse for PageOf<T> {
    fn into_response(self) -> Response {
        let mut resp = Json(self.items).into_response();
        if let Some(next) = self.next {
            let query: Vec<String> = self
                .uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("page_token="))
                .map(str::to_string)
                .chain([format!("page_token={next}")])
                .collect();
            let link = format!("<{}?{}>; rel=\"next\"", self.uri.path(), query.join("&"));
            if let Ok(v) = HeaderValue::from_str(&link) {
                resp.headers_mut().insert(axum::http::header::LINK, v);
            }
            if let Ok(v) = HeaderValue::from_str(&next) {
                resp.headers_mut().insert("next-page-token", v);
            }
        }
        resp
    }
}

impl<T> Listed for Owned<T>
where
    T: Named,
{
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }
}

/// The model types' id and name.
pub trait Named {
    fn id(&self) -> &str;
    fn name(&self) -> &str;
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn id(&self) -> &str {
                &self.id
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}
named!(
    crate::model::Vpc,
    crate::model::Subnet,
    crate::model::Nic,
    crate::model::SecurityGroup,
    crate::model::ExternalNetwork
);

impl Listed for super::nics::NicView {
    fn id(&self) -> &str {
        self.nic.id()
    }
    fn name(&self) -> &str {
        Listed::name(&self.nic)
    }
    fn tags(&self) -> &BTreeMap<String, String> {
        &self.nic.tags
    }
}
