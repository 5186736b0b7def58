//! HTTP routes, one module per resource. Handlers are thin: extract, call, map errors.

/// Admin views across users: credentials by status, integrations, effective settings.
pub mod admin;
/// Audit log listing and chain verification.
pub mod audit;
/// Exchange connections, their limits, call log and balances.
pub mod connections;
/// Credentials (exchange API keys): create, list, edit, rotate, reveal, delete.
pub mod credentials;
/// `POST /v1/vault/rotate-key`: per-user DEK rotation.
pub mod dek_rotation;
/// Liveness, readiness, metrics and the OpenAPI document.
pub mod health;
/// Per-user OAuth integrations and their tokens.
pub mod integrations;
/// Key pairs generated inside keygate (pending until the exchange key id is attached).
pub mod keygen;
/// Rotation schedules and what is due; reactivation of suspended credentials.
pub mod rotation;
/// Admin-only platform provider keys.
pub mod site_keys;
/// Token revocation ("sign out everywhere").
pub mod tokens;
/// Vault password: setup, unlock, lock, status, access log, crypto-shredding.
pub mod vault;
/// Per-user and platform webhook endpoints and their delivery logs.
pub mod webhooks;

/// The oversight routes (issue 8), merged into the app router in one line.
pub fn oversight_router() -> axum::Router<crate::state::AppState> {
    axum::Router::new()
        .merge(webhooks::router())
        .merge(rotation::router())
        .merge(site_keys::router())
        .merge(integrations::router())
        .merge(audit::export_router())
        .merge(admin::router())
        .merge(tokens::router())
}

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

/// `limit` and `cursor` of every list route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct Page {
    /// 1–200, default 50.
    pub limit: Option<i64>,
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl Page {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(l) if (1..=200).contains(&l) => Ok(l),
            Some(_) => Err(ApiError::Validation(vec![FieldError::new(
                "limit",
                "must be between 1 and 200",
            )])),
        }
    }
    pub fn cursor_uuid(&self) -> Result<Option<Uuid>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                Uuid::parse_str(c)
                    .map_err(|_| ApiError::field("cursor", "not a cursor returned by this API"))
            })
            .transpose()
    }
    pub fn cursor_i64(&self) -> Result<Option<i64>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse()
                    .map_err(|_| ApiError::field("cursor", "not a cursor returned by this API"))
            })
            .transpose()
    }
}

/// The list shape of every collection (DESIGN.md §7).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Builds a list page: asks for `limit + 1` rows upstream, so a next page is known.
pub fn page<T, R>(
    mut rows: Vec<R>,
    limit: i64,
    cursor_of: impl Fn(&R) -> String,
    view: impl Fn(R) -> T,
) -> List<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(&cursor_of)
    } else {
        None
    };
    List {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }
}

/// A JSON response with an `ETag` carrying the row version (for `If-Match`).
pub fn with_etag<T: Serialize>(status: StatusCode, row_version: i64, view: T) -> Response {
    let mut r = (status, axum::Json(view)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{row_version}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// A PATCH field that may be sent as `null` (clear it) or left out (keep it): use with
/// `#[serde(default, deserialize_with = "crate::routes::present")]` on an
/// `Option<Option<T>>` (`None` left out, `Some(None)` null).
pub fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A list filter's text (`?category=`, `?exchange=`): at most 64 characters, none of them
/// control characters (PostgreSQL refuses NUL with a 500).
pub fn check_filter(field: &str, v: &Option<String>) -> Result<(), ApiError> {
    if v.as_ref()
        .is_some_and(|v| v.len() > 64 || v.chars().any(char::is_control))
    {
        return Err(ApiError::field(
            field,
            "must be at most 64 characters, without control characters",
        ));
    }
    Ok(())
}

/// An instant a client sends (an expiry, a due date): in years 1–9999, what keygate
/// stores (`DbTime::stored`). chrono reads any year it knows (`+10000-…`, `-0001-…`);
/// year 1 is what some clients send for "unknown" (Go's zero time).
pub fn check_instant(field: &str, t: &chrono::DateTime<chrono::Utc>, errors: &mut Vec<FieldError>) {
    use chrono::Datelike;
    if !(1..=9999).contains(&t.year()) {
        errors.push(FieldError::new(
            field,
            "must be a time in the years 1 to 9999",
        ));
    }
}

/// Free text (a description): at most `max` characters, no control characters but line
/// breaks and tabs (PostgreSQL's text refuses NUL, and logs and the console show it).
pub fn check_free_text(field: &str, v: &str, max: usize, errors: &mut Vec<FieldError>) {
    if v.chars().count() > max
        || v.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters, without control characters"),
        ));
    }
}

/// A client's JSON value (metadata, configuration): no NUL in any key or string, which
/// PostgreSQL's `jsonb` refuses.
pub fn check_json_text(field: &str, v: &serde_json::Value, errors: &mut Vec<FieldError>) {
    fn has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(has_nul),
            serde_json::Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(v) {
        errors.push(FieldError::new(field, "must not contain NUL characters"));
    }
}

#[cfg(test)]
mod checks {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn instants_outside_years_1_to_9999_are_refused() {
        let mut e = vec![];
        for y in [1, 1970, 2026, 9999] {
            check_instant(
                "t",
                &chrono::Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap(),
                &mut e,
            );
        }
        assert!(e.is_empty());
        for y in [-1, 0, -5000, 10_000] {
            check_instant(
                "t",
                &chrono::Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap(),
                &mut e,
            );
        }
        assert_eq!(e.len(), 4);
    }

    #[test]
    fn nul_is_found_anywhere_in_json() {
        let mut e = vec![];
        check_json_text("m", &serde_json::json!({"a": ["b", {"c": 1}]}), &mut e);
        assert!(e.is_empty());
        check_json_text("m", &serde_json::json!({"a": ["b\u{0}"]}), &mut e);
        check_json_text("m", &serde_json::json!({"a\u{0}": 1}), &mut e);
        assert_eq!(e.len(), 2);
        check_free_text("d", "two\nlines\tok", 20, &mut e);
        assert_eq!(e.len(), 2);
        check_free_text("d", "nul\u{0}", 20, &mut e);
        assert_eq!(e.len(), 3);
    }
}
