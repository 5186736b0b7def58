//! Small building blocks shared by the exchange modules: MACs, hashes, query and form
//! handling, decimal parsing. Nothing here knows about a particular exchange.

use base64::Engine as _;
use http::HeaderMap;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rust_decimal::Decimal;
use std::str::FromStr;

use crate::ParseError;

/// HMAC-SHA256 (ring: assembly SHA-256, about twice the portable code on CPUs without
/// SHA extensions).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::hmac::sign(&k, msg).as_ref());
    out
}

pub fn hmac_sha512(key: &[u8], msg: &[u8]) -> [u8; 64] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, key);
    let mut out = [0u8; 64];
    out.copy_from_slice(ring::hmac::sign(&k, msg).as_ref());
    out
}

pub fn sha256(msg: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, msg).as_ref());
    out
}

pub fn sha512(msg: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA512, msg).as_ref());
    out
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hex_lower(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Characters left unescaped by RFC 3986 (`A-Z a-z 0-9 - . _ ~`).
pub const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Splits a raw query (or `application/x-www-form-urlencoded` body) into its `k=v` pieces
/// **without decoding**, so that a re-joined string is byte-identical to the input.
pub fn split_raw_pairs(raw: &str) -> Vec<(&str, &str)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

/// Joins raw pairs back into a query string.
pub fn join_raw_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Removes the named parameters from a raw query, keeping every other byte as it was.
/// Returns `None` when nothing is left.
pub fn remove_raw_params(raw: Option<&str>, names: &[&str]) -> Option<String> {
    let raw = raw?;
    let kept: Vec<_> = split_raw_pairs(raw)
        .into_iter()
        .filter(|(k, _)| !names.iter().any(|n| n.eq_ignore_ascii_case(k)))
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(join_raw_pairs(kept))
    }
}

/// Decodes a query or form body into owned key/value pairs (order kept).
pub fn decode_pairs(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The value of `name` among decoded pairs; an error when `name` occurs more than once.
///
/// A repeated parameter (`volume=0.001&volume=1000`, or the same key in the query and in
/// the body of a module that merges them) is refused: keygate would read one value and the
/// exchange may act on the other.
pub fn pair<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, ParseError> {
    let mut found = pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(ParseError::Malformed(format!(
            "parameter {} appears more than once",
            name.chars()
                .filter(char::is_ascii_graphic)
                .take(64)
                .collect::<String>()
        )));
    }
    Ok(first)
}

/// Removes every header whose name is in `names` (case-insensitive) or starts with one of
/// `prefixes` (lower-case).
pub fn remove_headers(headers: &mut HeaderMap, names: &[&str], prefixes: &[&str]) {
    let doomed: Vec<http::HeaderName> = headers
        .keys()
        .filter(|h| {
            let n = h.as_str();
            names.iter().any(|x| x.eq_ignore_ascii_case(n))
                || prefixes.iter().any(|p| n.starts_with(p))
        })
        .cloned()
        .collect();
    for h in doomed {
        headers.remove(h);
    }
}

/// Sets a header from a string that keygate built (always valid header text).
pub fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    let value = http::HeaderValue::from_str(value).expect("signature header values are ASCII");
    headers.insert(http::HeaderName::from_static(name), value);
}

/// `Err` when the JSON object `v` has any of `fields`: fields the exchange ignores on this
/// endpoint (it reads others for the same thing), so what keygate would check in them is
/// in doubt.
pub fn json_refuse(v: &serde_json::Value, fields: &[&'static str]) -> Result<(), ParseError> {
    match fields.iter().find(|f| v.get(**f).is_some()) {
        Some(f) => Err(ParseError::InvalidValue(f)),
        None => Ok(()),
    }
}

/// Refuses a key of the JSON object `v` that is `name` in another case (`Memo`,
/// `MarketUnit`): a backend matching keys without regard to case would read it, and
/// keygate, reading `name`, would not.
pub fn json_refuse_other_case(v: &serde_json::Value, name: &'static str) -> Result<(), ParseError> {
    match v.as_object() {
        Some(obj)
            if obj
                .keys()
                .any(|k| k != name && k.eq_ignore_ascii_case(name)) =>
        {
            Err(ParseError::InvalidValue(name))
        }
        _ => Ok(()),
    }
}

/// Whether the JSON flag `name` of `v` is set: present and neither `false` nor null. A
/// value of another type counts as set (an `autoBorrow: "true"` is refused under a cap
/// rather than taken for unset).
pub fn json_flag_set(v: &serde_json::Value, name: &str) -> bool {
    !matches!(
        v.get(name),
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false))
    )
}

/// A withdrawal's memo / tag field `name` of a JSON body, read as the exchange would: a
/// string, or a number (which many exchanges take for the tag it spells), `None` when
/// absent, null or empty. Anything else, or the same name in another case (`Memo`, which
/// a backend matching keys without regard to case would read), is refused: a tag keygate
/// did not see would pass an allowlist entry that names none.
pub fn json_tag(v: &serde_json::Value, name: &'static str) -> Result<Option<String>, ParseError> {
    json_refuse_other_case(v, name)?;
    match v.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ParseError::InvalidValue(name)),
    }
}

/// A withdrawal's network / chain field `name` of a JSON body, read as [`json_tag`] reads
/// a memo: a string or a number, `None` when absent, null or empty, and refused as
/// another type or with the name in another case. An allowlist entry that names a
/// network allows only a withdrawal whose network keygate read is the one the exchange
/// will use.
pub fn json_network(
    v: &serde_json::Value,
    name: &'static str,
) -> Result<Option<String>, ParseError> {
    json_tag(v, name)
}

/// Parses a decimal from an exchange field (accepts `"1.5"`, `1.5`, `"1e-8"`).
pub fn parse_decimal(field: &'static str, s: &str) -> Result<Decimal, ParseError> {
    let s = s.trim();
    Decimal::from_str(s)
        .or_else(|_| Decimal::from_scientific(s))
        .map_err(|_| ParseError::InvalidValue(field))
}

/// Reads a decimal out of a JSON value that may be a string or a number.
pub fn json_decimal(field: &'static str, v: &serde_json::Value) -> Result<Decimal, ParseError> {
    match v {
        serde_json::Value::String(s) => parse_decimal(field, s),
        serde_json::Value::Number(n) => parse_decimal(field, &n.to_string()),
        _ => Err(ParseError::InvalidValue(field)),
    }
}

/// Like [`json_decimal`] but absent / null / empty string is `None`.
pub fn json_opt_decimal(
    field: &'static str,
    v: Option<&serde_json::Value>,
) -> Result<Option<Decimal>, ParseError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => json_decimal(field, v).map(Some),
    }
}

/// Parses a JSON body, mapping failure to [`ParseError::Malformed`] without echoing it.
pub fn json_body(body: &[u8]) -> Result<serde_json::Value, ParseError> {
    serde_json::from_slice(body)
        .map_err(|e| ParseError::Malformed(format!("json: {}", e.classify_str())))
}

/// Parses the JSON body of a request keygate reads for policy, refusing an object that
/// holds the same key twice at any depth.
///
/// `serde_json` keeps the last of duplicate keys; an exchange's parser may keep the first
/// (or reject the body), so `{"qty":"0.001","qty":"1000"}` could be checked as one order
/// and executed as another. keygate cannot know which one the exchange reads: it refuses.
pub fn json_request_body(body: &[u8]) -> Result<serde_json::Value, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde::Deserialize::deserialize(&mut de).and_then(|NoDuplicateKeys| de.end()) {
        Ok(()) => {}
        Err(e) if e.to_string().starts_with(DUPLICATE_KEY) => {
            return Err(ParseError::Malformed(
                "json: an object holds the same key twice".into(),
            ))
        }
        Err(e) => return Err(ParseError::Malformed(format!("json: {}", e.classify_str()))),
    }
    json_body(body)
}

const DUPLICATE_KEY: &str = "duplicate key";

/// Walks any JSON value and fails on an object with a repeated key; keeps nothing.
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            // keys that differ only in case count as the same: some parsers match them so
            if !seen.insert(key.to_lowercase()) {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
}

trait ClassifyStr {
    fn classify_str(&self) -> &'static str;
}

impl ClassifyStr for serde_json::Error {
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        }
    }
}

/// Splits a concatenated symbol such as `BTCUSDT` into base and quote by known quote
/// suffixes. `None` when no known quote matches.
pub fn split_concatenated_symbol(symbol: &str) -> Option<(String, String)> {
    const QUOTES: [&str; 14] = [
        "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "DAI", "USD", "EUR", "TRY", "BRL", "BTC",
        "ETH", "BNB",
    ];
    let upper = symbol.to_ascii_uppercase();
    QUOTES.iter().find_map(|q| {
        upper
            .strip_suffix(q)
            .filter(|b| !b.is_empty())
            .map(|b| (b.to_string(), q.to_string()))
    })
}

/// One row of an exchange's endpoint table: `(method, path pattern, class)`.
/// `method` is an upper-case HTTP method, several joined by `|`, or `"*"` for any.
pub type RouteRow = (&'static str, &'static str, crate::EndpointClass);

/// Whether `path` matches `pattern`, segment by segment (a trailing `/` on `path` is
/// ignored). Pattern segments: a literal; `{name}` or `*`, any one non-empty segment;
/// `a|b`, one of the literals; `pre*`, a segment starting with `pre`; a final `**`, zero or
/// more further segments.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (Some("**"), _) => return want.next().is_none(),
            (None, None) => return true,
            (Some(w), Some(g)) => {
                let ok = if w == "*" || (w.starts_with('{') && w.ends_with('}')) {
                    !g.is_empty()
                } else if let Some(prefix) = w.strip_suffix('*') {
                    g.starts_with(prefix) && g.len() > prefix.len()
                } else if w.contains('|') {
                    w.split('|').any(|alt| alt == g)
                } else {
                    w == g
                };
                if !ok {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The class of the first row of `table` matching `method path`, if any.
pub fn route_class(
    table: &[RouteRow],
    method: &http::Method,
    path: &str,
) -> Option<crate::EndpointClass> {
    route_row(table, method, path).map(|(_, _, class)| *class)
}

/// The first row of `table` matching `method path`, if any.
pub fn route_row<'t>(
    table: &'t [RouteRow],
    method: &http::Method,
    path: &str,
) -> Option<&'t RouteRow> {
    table.iter().find(|(m, p, _)| {
        (*m == "*" || m.split('|').any(|m| m == method.as_str())) && path_matches(p, path)
    })
}

/// For an exchange whose private writes carry every parameter in the body (OKX, Bybit,
/// Bitget, KuCoin, Coinbase, Kraken): a query string beside a write's body is refused.
/// keygate reads the body only, and the exchange might read the query too (an order
/// checked as one thing and run as another). Stock CCXT never sends one. Reads and
/// DELETEs carry their parameters in the query and pass, unless they carry a body too:
/// a GET or DELETE to an endpoint classified as a withdrawal or transfer for any method
/// is read from its body, which the exchange may ignore for the query.
pub(crate) fn no_query_beside_the_body(req: &crate::OutgoingRequest) -> Result<(), ParseError> {
    let writes = matches!(
        req.method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    ) || !req.body.is_empty();
    if writes && req.query.as_deref().is_some_and(|q| !q.is_empty()) {
        return Err(ParseError::Malformed(
            "a query string beside the body; this exchange reads a write's parameters from the body"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // A memo or tag is read as the exchange reads it: a number is a tag, a lone key in
    // another case or a value of another type is refused. Before, a numeric memo was
    // taken for none, so a bare allowlisted address let a tagged withdrawal through.
    #[test]
    fn a_memo_is_read_as_the_exchange_reads_it() {
        let tag = |v: serde_json::Value| json_tag(&v, "memo");
        assert_eq!(
            tag(serde_json::json!({"memo": "123"})).unwrap().as_deref(),
            Some("123")
        );
        assert_eq!(
            tag(serde_json::json!({"memo": 123456})).unwrap().as_deref(),
            Some("123456")
        );
        assert_eq!(tag(serde_json::json!({"memo": ""})).unwrap(), None);
        assert_eq!(tag(serde_json::json!({"memo": null})).unwrap(), None);
        assert_eq!(tag(serde_json::json!({})).unwrap(), None);
        for bad in [
            serde_json::json!({"Memo": "123"}),
            serde_json::json!({"MEMO": 1}),
            serde_json::json!({"memo": true}),
            serde_json::json!({"memo": ["1"]}),
            serde_json::json!({"memo": {"id": 1}}),
        ] {
            assert!(tag(bad.clone()).is_err(), "{bad}");
        }
    }

    /// Writes to the body-only exchanges carry no query string; their reads and DELETEs,
    /// and the other exchanges' writes, may.
    #[test]
    fn a_query_beside_a_json_body_is_refused() {
        use crate::{EndpointClass, ExchangeId as X, OutgoingRequest};
        let with = |m: http::Method, q: Option<&str>| OutgoingRequest {
            method: m,
            path: "/v5/order/create".into(),
            query: q.map(Into::into),
            headers: HeaderMap::new(),
            body: Default::default(),
        };
        let post = http::Method::POST;
        assert!(no_query_beside_the_body(&with(post.clone(), Some("qty=1000"))).is_err());
        assert!(no_query_beside_the_body(&with(http::Method::PATCH, Some("a=1"))).is_err());
        assert!(no_query_beside_the_body(&with(post.clone(), None)).is_ok());
        assert!(no_query_beside_the_body(&with(post.clone(), Some(""))).is_ok());
        assert!(no_query_beside_the_body(&with(http::Method::DELETE, Some("symbol=A"))).is_ok());
        // a read or a DELETE with a body is read from its body: no query beside it
        for m in [http::Method::GET, http::Method::DELETE] {
            let r = OutgoingRequest {
                body: bytes::Bytes::from_static(br#"{"ccy":"USDT","amt":"1"}"#),
                ..with(m.clone(), Some("amt=1000"))
            };
            assert!(no_query_beside_the_body(&r).is_err(), "{m}");
        }
        for x in [
            X::Okx,
            X::Bybit,
            X::Bitget,
            X::Kucoin,
            X::Coinbase,
            X::Kraken,
        ] {
            let e = x
                .api()
                .parse_intent(EndpointClass::Trade, &with(post.clone(), Some("qty=1000")))
                .unwrap_err();
            assert!(e.to_string().contains("query string"), "{x:?}: {e}");
        }
        for x in [X::Binance, X::Binanceusdm, X::Gate] {
            let e = x
                .api()
                .parse_intent(EndpointClass::Trade, &with(post.clone(), Some("a=1")));
            assert!(
                e.as_ref()
                    .map_or_else(|e| !e.to_string().contains("query string"), |_| true),
                "{x:?}: {e:?}"
            );
        }
    }

    #[test]
    fn raw_pairs_round_trip_byte_for_byte() {
        let q = "symbol=BTCUSDT&price=0.1&note=a%20b&signature=abc";
        assert_eq!(
            remove_raw_params(Some(q), &["signature"]).unwrap(),
            "symbol=BTCUSDT&price=0.1&note=a%20b"
        );
        assert_eq!(remove_raw_params(Some("signature=x"), &["signature"]), None);
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let p = decode_pairs("volume=0.001&pair=XBTUSD&volume=1000");
        assert!(pair(&p, "volume").is_err());
        assert_eq!(pair(&p, "pair").unwrap(), Some("XBTUSD"));
        assert_eq!(pair(&p, "price").unwrap(), None);
    }

    #[test]
    fn json_request_bodies_with_duplicate_keys_are_refused() {
        for bad in [
            r#"{"qty":"0.001","qty":"1000"}"#,
            r#"{"request":[{"symbol":"BTCUSDT","qty":"1","qty":"2"}]}"#,
            r#"[{"a":{"b":1,"b":2}}]"#,
        ] {
            assert!(json_request_body(bad.as_bytes()).is_err(), "{bad}");
        }
        // The same key in sibling objects is fine; so are scalars and arrays.
        let ok = json_request_body(br#"[{"qty":"1"},{"qty":"2","x":[1,{"qty":3}]}]"#).unwrap();
        assert_eq!(ok[1]["qty"], "2");
        assert!(json_request_body(b"1.5").is_ok());
        assert!(json_request_body(b"{} {}").is_err());
        assert!(json_request_body(b"").is_err());
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex_lower(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn splits_symbols() {
        assert_eq!(
            split_concatenated_symbol("BTCUSDT"),
            Some(("BTC".into(), "USDT".into()))
        );
        assert_eq!(split_concatenated_symbol("USDT"), None);
    }

    #[test]
    fn path_patterns() {
        assert!(path_matches("/api/v1/orders/**", "/api/v1/orders"));
        assert!(path_matches("/api/v1/orders/**", "/api/v1/orders/abc/def"));
        assert!(path_matches("/a/{id}/c", "/a/x/c/"));
        assert!(!path_matches("/a/{id}/c", "/a//c"));
        assert!(path_matches("/a/futures|delivery/x", "/a/delivery/x"));
        assert!(!path_matches("/a/futures|delivery/x", "/a/spot/x"));
        assert!(path_matches("/w/sub_account_*", "/w/sub_account_balances"));
        assert!(!path_matches("/w/sub_account_*", "/w/sub_account_"));
        assert!(!path_matches("/api/v1/orders", "/api/v1/orders/x"));
    }
}
