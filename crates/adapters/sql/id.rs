//! Ids as stored: a uuid, bound and read as each store's uuid type (PostgreSQL's `uuid`,
//! SQLite's text), with the conversions from and to the domain's ids.

use d2_kernel::{AccountId, PolicyId, TokenId, UserId};
use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use serde::{Deserialize, Serialize};

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    AsExpression,
    FromSqlRow,
    Serialize,
    Deserialize,
)]
#[diesel(sql_type = crate::types::Uuid)]
#[serde(transparent)]
pub(crate) struct Id(pub(crate) uuid::Uuid);

macro_rules! id_conversions {
    ($($domain:ty),*) => {$(
        impl From<$domain> for Id {
            fn from(id: $domain) -> Self {
                Self(*id.as_uuid())
            }
        }
        impl From<Id> for $domain {
            fn from(id: Id) -> Self {
                <$domain>::from_uuid(id.0)
            }
        }
    )*};
}

id_conversions!(
    AccountId,
    PolicyId,
    TokenId,
    UserId,
    d2_members::InvitationId,
    d2_billing::GrantId,
    d2_billing::EntryId,
    d2_billing::UsageRecordId
);
