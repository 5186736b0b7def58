//! The request/answer types the per-exchange modules work with, free of hyper.

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::{json, Value};

/// A received request, body already read.
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Req {
    /// A header's value as text; `None` when absent, not visible ASCII, or sent more than
    /// once (two `X-MBX-APIKEY`s mean a gateway appended its auth without stripping the
    /// client's, which a real exchange would not accept either).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        first.to_str().ok()
    }

    /// A header that is present and not empty.
    pub(crate) fn header_nonempty(&self, name: &str) -> Option<&str> {
        self.header(name).filter(|v| !v.is_empty())
    }

    /// Raw query string ("" when none).
    pub(crate) fn query_str(&self) -> &str {
        self.query.as_deref().unwrap_or("")
    }

    /// Body as text (lossy: signatures are checked over the raw bytes elsewhere).
    pub(crate) fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Decoded query parameters.
    pub(crate) fn query_params(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query_str().as_bytes())
            .into_owned()
            .collect()
    }

    /// Decoded query plus form-body parameters (Binance, Kraken).
    pub(crate) fn form_params(&self) -> Vec<(String, String)> {
        let mut p = self.query_params();
        if !self.is_json_body() {
            p.extend(url::form_urlencoded::parse(&self.body).into_owned());
        }
        p
    }

    pub(crate) fn is_json_body(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().contains("json"))
            || self.body.first() == Some(&b'{')
            || self.body.first() == Some(&b'[')
    }

    /// The body parsed as JSON (`Null` when absent or not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// First value of `name` in decoded parameters.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A string field of a JSON object, numbers rendered as text.
pub(crate) fn jstr(v: &Value, name: &str) -> Option<String> {
    match v.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    pub(crate) content_type: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(serde_json::to_vec(&v).expect("json")),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    pub(crate) fn ok(v: Value) -> Reply {
        Reply::json(200, v)
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl ToString) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    /// The mock's 404 for paths no API it serves has.
    pub(crate) fn not_found(req: &Req) -> Reply {
        Reply::json(
            404,
            json!({"error": "not_found", "message": "mock exchange has no such endpoint",
                   "method": req.method.as_str(), "path": req.path}),
        )
    }
}

/// What authentication concluded.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// Public endpoint: nothing to verify.
    Public,
    Verified {
        api_key: String,
    },
    Rejected {
        api_key: Option<String>,
        reason: String,
    },
}

/// An answer plus the authentication verdict, for the record.
pub(crate) struct Handled {
    pub(crate) reply: Reply,
    pub(crate) auth: Auth,
}

impl Handled {
    pub(crate) fn public(reply: Reply) -> Handled {
        Handled {
            reply,
            auth: Auth::Public,
        }
    }

    pub(crate) fn verified(api_key: &str, reply: Reply) -> Handled {
        Handled {
            reply,
            auth: Auth::Verified {
                api_key: api_key.to_string(),
            },
        }
    }

    pub(crate) fn not_found(req: &Req) -> Handled {
        Handled::public(Reply::not_found(req))
    }

    pub(crate) fn map_reply(mut self, f: impl FnOnce(Reply) -> Reply) -> Handled {
        self.reply = f(self.reply);
        self
    }
}

/// A failed verification: the exchange's error answer and the reason for the record.
pub(crate) struct Rejection {
    pub(crate) api_key: Option<String>,
    pub(crate) reason: String,
    /// Boxed to keep `Result<_, Rejection>` small.
    pub(crate) reply: Box<Reply>,
}

impl Rejection {
    pub(crate) fn new(api_key: Option<&str>, reason: impl Into<String>, reply: Reply) -> Self {
        Rejection {
            api_key: api_key.map(str::to_string),
            reason: reason.into(),
            reply: Box::new(reply),
        }
    }
}

impl From<Rejection> for Handled {
    fn from(r: Rejection) -> Handled {
        Handled {
            reply: *r.reply,
            auth: Auth::Rejected {
                api_key: r.api_key,
                reason: r.reason,
            },
        }
    }
}

/// The common shape of every module's private-route handling: public routes answer at
/// once; a request without any auth to a path the module does not know is a 404; anything
/// else is verified first and then answered from `known` or with `generic`.
pub(crate) fn private_flow(
    req: &Req,
    has_auth: bool,
    known: Option<Value>,
    verify: impl FnOnce() -> Result<String, Rejection>,
    generic: impl FnOnce() -> Value,
) -> Handled {
    if !has_auth && known.is_none() {
        return Handled::not_found(req);
    }
    match verify() {
        Ok(key) => Handled::verified(&key, Reply::ok(known.unwrap_or_else(generic))),
        Err(rej) => rej.into(),
    }
}

/// Mock market prices in USD(T).
pub(crate) fn price_of(base: &str) -> f64 {
    match base.to_ascii_uppercase().as_str() {
        "BTC" | "XBT" | "XXBT" => 50_000.0,
        "ETH" | "XETH" => 3_000.0,
        "SOL" => 150.0,
        "USDT" | "USDC" | "USD" | "ZUSD" => 1.0,
        _ => 10.0,
    }
}

/// Mock balances every account holds: (asset, free, locked).
pub(crate) const BALANCES: [(&str, &str, &str); 3] = [
    ("USDT", "10000.00000000", "0.00000000"),
    ("BTC", "0.50000000", "0.10000000"),
    ("ETH", "2.00000000", "0.00000000"),
];

/// Sum of two decimal strings, rendered with 8 decimals.
pub(crate) fn add(a: &str, b: &str) -> String {
    let x: f64 = a.parse().unwrap_or(0.0);
    let y: f64 = b.parse().unwrap_or(0.0);
    format!("{:.8}", x + y)
}
