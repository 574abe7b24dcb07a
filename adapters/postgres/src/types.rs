//! Wire types the stock `postgres-types` impls do not cover the way we need.

use std::error::Error;

use bytes::BytesMut;
use postgres_types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};
use serde_json::value::RawValue;

type BoxError = Box<dyn Error + Sync + Send>;

/// A PostgreSQL `xid8` (full transaction id) as `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Xid8(pub u64);

impl<'a> FromSql<'a> for Xid8 {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| "xid8: expected 8 bytes")?;
        Ok(Xid8(u64::from_be_bytes(bytes)))
    }
    accepts!(XID8);
}

impl ToSql for Xid8 {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }
    accepts!(XID8);
    to_sql_checked!();
}

/// `json`/`jsonb` kept as validated raw text: a handler parses only what it reads.
#[derive(Debug)]
pub struct RawJson(pub Box<RawValue>);

impl<'a> FromSql<'a> for RawJson {
    fn from_sql(ty: &Type, mut raw: &'a [u8]) -> Result<Self, BoxError> {
        if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, rest)) => raw = rest,
                _ => return Err("jsonb: unsupported binary format version".into()),
            }
        }
        let text = std::str::from_utf8(raw)?;
        Ok(RawJson(RawValue::from_string(text.to_owned())?))
    }
    accepts!(JSON, JSONB);
}
