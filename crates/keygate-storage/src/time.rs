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
    /// The fixed-width text form (also the canonical form in audit hashes).
    pub fn canonical(&self) -> String {
        self.0.format(FORMAT).to_string()
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
        let t = DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc);
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
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
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
}
