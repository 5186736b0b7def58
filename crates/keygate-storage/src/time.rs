//! [`DbTime`]: one timestamp type for both backends.
//!
//! sqlx's own SQLite encoding of `DateTime<Utc>` uses a variable number of fractional
//! digits, which does not sort as text. keygate stores `YYYY-MM-DDTHH:MM:SS.ffffffZ`
//! (always six digits) on SQLite and TIMESTAMPTZ on PostgreSQL; both hold microseconds,
//! so a value survives a round trip through either backend unchanged (the audit chain
//! relies on that).

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Type};

#[cfg(test)]
const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// A UTC instant at microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DbTime(pub DateTime<Utc>);

impl DbTime {
    /// Truncates to microseconds, the precision both backends store.
    pub fn new(t: DateTime<Utc>) -> Self {
        DbTime(t.trunc_subsecs(6))
    }
    pub fn now() -> Self {
        Self::new(Utc::now())
    }
    pub fn from_micros(us: i64) -> Self {
        DbTime(Utc.timestamp_micros(us).single().unwrap_or_default())
    }
    pub fn micros(&self) -> i64 {
        self.0.timestamp_micros()
    }
    /// The instant as stored: within years 1–9999, the range both backends store and
    /// read back as the same text (an instant outside is stored as the nearest end). A
    /// client may send any year chrono knows (`+10000-…`, `-0001-…`); stored as such, it
    /// came back from SQLite as text no RFC 3339 parser reads, or PostgreSQL refused it.
    pub fn stored(&self) -> DateTime<Utc> {
        self.0.clamp(Self::first(), Self::last())
    }
    /// 0001-01-01T00:00:00Z.
    pub fn first() -> DateTime<Utc> {
        Utc.timestamp_micros(-62_135_596_800_000_000)
            .single()
            .unwrap_or_default()
    }
    /// 9999-12-31T23:59:59.999999Z.
    pub fn last() -> DateTime<Utc> {
        Utc.timestamp_micros(253_402_300_799_999_999)
            .single()
            .unwrap_or_default()
    }
    /// The fixed-width text form of [`DbTime::stored`] (also the canonical form in audit
    /// hashes). Written by hand (chrono's formatter interprets the pattern on every call,
    /// a visible cost when the gateway's writer encodes two per call); the same text as
    /// `FORMAT`.
    pub fn canonical(&self) -> String {
        use chrono::{Datelike, Timelike};
        let t = &self.stored();
        let year = t.year();
        let mut b = [0u8; 27];
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (0..width).rev() {
                b[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year as u32);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        // a leap second (nanosecond >= 1e9) prints as :60, as chrono's %S does
        let (sec, nanos) = (t.second(), t.nanosecond());
        put(17, 2, sec + nanos / 1_000_000_000);
        put(20, 6, (nanos % 1_000_000_000) / 1000);
        for (at, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ] {
            b[at] = c;
        }
        String::from_utf8_lossy(&b).into_owned()
    }
}

impl From<DateTime<Utc>> for DbTime {
    fn from(t: DateTime<Utc>) -> Self {
        DbTime::new(t)
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.canonical(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let s = <&str as Decode<Sqlite>>::decode(value)?;
        let t = match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            // a year outside 0–9999 (`+10000-…`), stored before such instants were
            // clamped ([`DbTime::stored`])
            Err(e) => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.fZ")
                .map_err(|_| e)?
                .and_utc(),
        };
        Ok(DbTime::new(t))
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.stored(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DbTime(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_as_time() {
        let a = DbTime::from_micros(1_700_000_000_000_000);
        let b = DbTime::from_micros(1_700_000_000_500_000);
        assert!(a.canonical() < b.canonical());
        assert_eq!(a.canonical(), "2023-11-14T22:13:20.000000Z");
    }

    #[test]
    fn hand_written_canonical_form_matches_chrono() {
        let samples = [
            0i64,
            1,
            999_999,
            1_700_000_000_123_456,
            -1,
            -62_135_596_800_000_000, // 0001-01-01
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            951_782_400_000_001,     // 2000-02-29
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let random = (0..2000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 253_402_300_800_000_000) as i64
        });
        for us in samples.into_iter().chain(random) {
            let t = DbTime::from_micros(us);
            assert_eq!(t.canonical(), t.0.format(FORMAT).to_string(), "{us}");
        }
        // outside 1-9999 the nearest end
        let far = DbTime(Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(far.canonical(), "9999-12-31T23:59:59.999999Z");
        let early = DbTime(Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(early.canonical(), "0001-01-01T00:00:00.000000Z");
        for t in [far, early] {
            let back = DateTime::parse_from_rfc3339(&t.canonical()).unwrap();
            assert_eq!(back.with_timezone(&Utc), t.stored());
        }
    }
}
