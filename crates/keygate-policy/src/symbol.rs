//! Symbol and address normalisation used for every list comparison.

/// Normalise a market symbol for comparison: trim, uppercase, drop a CCXT settle suffix
/// (`BTC/USDT:USDT` -> `BTCUSDT`) and the separators `/`, `-`, `_`.
///
/// `BTCUSDT`, `btc/usdt`, `BTC-USDT`, `BTC_USDT` and `BTC/USDT:USDT` all become `BTCUSDT`.
/// Exchange-native derivative names keep their suffix (`BTC-USDT-SWAP` -> `BTCUSDTSWAP`);
/// policy therefore also compares the `base + quote` form of an order (see `evaluate`).
pub fn normalize_symbol(symbol: &str) -> String {
    let head = symbol.split(':').next().unwrap_or_default();
    head.trim()
        .chars()
        .filter(|c| !matches!(c, '/' | '-' | '_') && !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

/// Normalise an asset code (`usdt` -> `USDT`).
pub(crate) fn normalize_asset(asset: &str) -> String {
    asset.trim().to_ascii_uppercase()
}

/// Assets that count 1:1 as USD, always (DESIGN.md §7 "Limits the seed stores").
pub const USD_STABLECOINS: [&str; 7] = ["USD", "USDT", "USDC", "BUSD", "FDUSD", "DAI", "TUSD"];

pub(crate) fn is_usd_like(asset: &str) -> bool {
    let a = normalize_asset(asset);
    USD_STABLECOINS.contains(&a.as_str())
}

/// Whether two withdrawal addresses are the same: exact match, except that EVM-style hex
/// addresses (`0x` + hex digits) compare case-insensitively (EIP-55 checksums only change
/// letter case). Surrounding whitespace is never significant.
pub fn same_address(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if is_hex_address(a) && is_hex_address(b) {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn is_hex_address(s: &str) -> bool {
    let rest = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
    matches!(rest, Some(r) if !r.is_empty() && r.bytes().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_normalise_across_notations() {
        for s in [
            "BTCUSDT",
            "btc/usdt",
            "BTC-USDT",
            "BTC_USDT",
            "BTC/USDT:USDT",
            " btcusdt ",
        ] {
            assert_eq!(normalize_symbol(s), "BTCUSDT", "{s}");
        }
        assert_eq!(normalize_symbol("BTC-USDT-SWAP"), "BTCUSDTSWAP");
        assert_eq!(normalize_symbol(""), "");
        assert_eq!(normalize_symbol(":USDT"), "");
    }

    #[test]
    fn stablecoins_are_usd() {
        for a in USD_STABLECOINS {
            assert!(is_usd_like(a));
            assert!(is_usd_like(&a.to_lowercase()));
        }
        assert!(!is_usd_like("BTC"));
        assert!(!is_usd_like("EUR"));
    }

    #[test]
    fn addresses_compare_case_insensitively_only_for_hex() {
        let a = "0x52908400098527886E0F7030069857D2E4169EE7";
        assert!(same_address(a, &a.to_lowercase()));
        assert!(same_address(a, &format!(" {a} ")));
        assert!(!same_address("bc1qabc", "BC1QABC"));
        assert!(same_address("bc1qabc", "bc1qabc"));
        assert!(!same_address("0xzz", "0XZZ"));
        assert!(!same_address("0x", "0X"));
    }
}
