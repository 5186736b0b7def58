//! One entry of a withdrawal address allowlist: an address, the memo / tag that tells
//! its owner apart on a shared deposit address, and the network it is allowed on.
//!
//! JSON takes either form: a string `"address"` or `"address#tag"` (any network, as
//! before networks could be named), or an object `{"address", "tag"?, "network"?}`. An
//! entry is written back as a string when it names no network and the string reads back
//! as the same entry, else as an object.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::symbol::same_address;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedDestination {
    pub address: String,
    /// Memo / tag / destination tag; an empty one counts as none.
    pub tag: Option<String>,
    /// The exchange's name of the network (Binance `network`, OKX / Bybit / KuCoin /
    /// Bitget / Gate `chain`, Coinbase `network`), compared without regard to case.
    /// `None`: any network the exchange offers for the asset.
    pub network: Option<String>,
}

impl AllowedDestination {
    /// The string form: `address#tag`, where a `#` with nothing before it is part of
    /// the address.
    pub fn parse(entry: &str) -> AllowedDestination {
        let (address, tag) = match entry.rsplit_once('#') {
            Some((a, t)) if !a.is_empty() => (a, Some(t.to_string())),
            _ => (entry, None),
        };
        AllowedDestination {
            address: address.to_string(),
            tag,
            network: None,
        }
    }

    /// This entry as a string, when it is one: no network, and the string reads back
    /// as this entry.
    fn as_plain(&self) -> Option<String> {
        if self.network.is_some() {
            return None;
        }
        let s = match &self.tag {
            Some(t) => format!("{}#{t}", self.address),
            None => self.address.clone(),
        };
        (AllowedDestination::parse(&s) == *self).then_some(s)
    }

    /// Whether this entry names `address` with `tag`: the same address (hex addresses
    /// in any case) and the same memo; an entry without a memo matches only a
    /// withdrawal without one, since exchanges' deposit addresses are shared by their
    /// users and told apart by the memo.
    pub fn names(&self, address: &str, tag: Option<&str>) -> bool {
        same_address(&self.address, address) && nonempty(self.tag.as_deref()) == nonempty(tag)
    }

    /// Whether a withdrawal on `network` may use this entry. An entry that names a
    /// network allows only a withdrawal that names the same one: without a name the
    /// exchange picks its default network, which keygate cannot know.
    pub fn allows_network(&self, network: Option<&str>) -> bool {
        match nonempty(self.network.as_deref()) {
            None => true,
            Some(n) => nonempty(network).is_some_and(|w| w.eq_ignore_ascii_case(n)),
        }
    }

    /// What both entries allow, if anything: the same destination, on the network
    /// either names (both naming one: the same one).
    pub fn intersect(&self, other: &AllowedDestination) -> Option<AllowedDestination> {
        if !self.names(&other.address, other.tag.as_deref()) {
            return None;
        }
        let network = match (
            nonempty(self.network.as_deref()),
            nonempty(other.network.as_deref()),
        ) {
            (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => return None,
            (Some(_), _) => self.network.clone(),
            (None, Some(_)) => other.network.clone(),
            (None, None) => self.network.clone(),
        };
        Some(AllowedDestination {
            network,
            ..self.clone()
        })
    }
}

pub(crate) fn nonempty(t: Option<&str>) -> Option<&str> {
    t.map(str::trim).filter(|t| !t.is_empty())
}

impl From<&str> for AllowedDestination {
    fn from(entry: &str) -> Self {
        AllowedDestination::parse(entry)
    }
}

impl Serialize for AllowedDestination {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(plain) = self.as_plain() {
            return s.serialize_str(&plain);
        }
        let len = 1 + usize::from(self.tag.is_some()) + usize::from(self.network.is_some());
        let mut m = s.serialize_map(Some(len))?;
        m.serialize_entry("address", &self.address)?;
        if let Some(t) = &self.tag {
            m.serialize_entry("tag", t)?;
        }
        if let Some(n) = &self.network {
            m.serialize_entry("network", n)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for AllowedDestination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DestinationVisitor)
    }
}

struct DestinationVisitor;

impl<'de> Visitor<'de> for DestinationVisitor {
    type Value = AllowedDestination;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#""address", "address#tag" or {"address", "tag", "network"}"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(AllowedDestination::parse(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut address, mut tag, mut network) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "address" => &mut address,
                "tag" => &mut tag,
                "network" => &mut network,
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["address", "tag", "network"],
                    ))
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            *slot = Some(map.next_value::<Option<String>>()?);
        }
        Ok(AllowedDestination {
            address: address
                .flatten()
                .ok_or_else(|| de::Error::missing_field("address"))?,
            tag: tag.flatten(),
            network: network.flatten(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(address: &str, tag: Option<&str>, network: Option<&str>) -> AllowedDestination {
        AllowedDestination {
            address: address.into(),
            tag: tag.map(Into::into),
            network: network.map(Into::into),
        }
    }

    #[test]
    fn string_form_reads_as_before() {
        assert_eq!(AllowedDestination::parse("0xabc"), d("0xabc", None, None));
        assert_eq!(
            AllowedDestination::parse("rAddr#1234"),
            d("rAddr", Some("1234"), None)
        );
        // A leading `#` is part of the address; the last `#` splits.
        assert_eq!(AllowedDestination::parse("#x"), d("#x", None, None));
        assert_eq!(
            AllowedDestination::parse("a#b#c"),
            d("a#b", Some("c"), None)
        );
    }

    #[test]
    fn json_round_trips_in_the_shortest_form() {
        for (input, output) in [
            (json!("0xabc"), json!("0xabc")),
            (json!("rAddr#1234"), json!("rAddr#1234")),
            (
                json!({"address": "rAddr", "tag": "1234"}),
                json!("rAddr#1234"),
            ),
            (json!({"address": "0xabc", "tag": null}), json!("0xabc")),
            (
                json!({"address": "0xabc", "network": "ARBITRUM"}),
                json!({"address": "0xabc", "network": "ARBITRUM"}),
            ),
            (
                json!({"address": "rAddr", "tag": "1", "network": "XRP"}),
                json!({"address": "rAddr", "tag": "1", "network": "XRP"}),
            ),
            // Would read back as address `a`, tag `b`: stays an object.
            (json!({"address": "a#b"}), json!({"address": "a#b"})),
        ] {
            let e: AllowedDestination = serde_json::from_value(input.clone()).unwrap();
            assert_eq!(serde_json::to_value(&e).unwrap(), output, "{input}");
            let back: AllowedDestination = serde_json::from_value(output).unwrap();
            assert_eq!(back, e, "{input}");
        }
    }

    #[test]
    fn json_object_form_is_strict() {
        for bad in [
            json!({}),
            json!({"tag": "1"}),
            json!({"address": null}),
            json!({"address": "a", "chain": "ETH"}),
            json!({"address": 5}),
            json!(["a"]),
            json!(5),
        ] {
            assert!(
                serde_json::from_value::<AllowedDestination>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let dup = r#"{"address":"a","network":"ETH","network":"BSC"}"#;
        assert!(serde_json::from_str::<AllowedDestination>(dup).is_err());
    }

    #[test]
    fn networks_match_without_regard_to_case_and_a_pinned_entry_needs_one() {
        let any = d("0xabc", None, None);
        assert!(any.allows_network(None));
        assert!(any.allows_network(Some("BSC")));
        let eth = d("0xabc", None, Some("ETH"));
        assert!(eth.allows_network(Some("ETH")));
        assert!(eth.allows_network(Some("eth")));
        assert!(eth.allows_network(Some(" eth ")));
        assert!(!eth.allows_network(Some("ARBITRUM")));
        assert!(!eth.allows_network(Some("ETH2")));
        assert!(!eth.allows_network(None));
        assert!(!eth.allows_network(Some("")));
        // An empty network in an entry is no network.
        assert!(d("0xabc", None, Some(" ")).allows_network(None));
    }

    #[test]
    fn intersection_keeps_the_narrower_network() {
        let any = d("0xABC", None, None);
        let eth = d("0xabc", None, Some("ETH"));
        let bsc = d("0xabc", None, Some("BSC"));
        assert_eq!(any.intersect(&eth).unwrap().network.as_deref(), Some("ETH"));
        assert_eq!(eth.intersect(&any).unwrap().network.as_deref(), Some("ETH"));
        assert_eq!(
            eth.intersect(&d("0xabc", None, Some("eth")))
                .unwrap()
                .network
                .as_deref(),
            Some("ETH")
        );
        assert_eq!(eth.intersect(&bsc), None);
        assert_eq!(any.intersect(&any).unwrap(), any);
        assert_eq!(any.intersect(&d("0xabc", Some("1"), None)), None);
        assert_eq!(any.intersect(&d("0xdef", None, None)), None);
    }
}
