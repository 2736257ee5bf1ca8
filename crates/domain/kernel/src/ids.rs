//! Typed identifiers. Each entity has its own id type so that an `AccountId` can never be
//! passed where a `TokenId` is expected. On the wire they are plain UUIDs.

/// Declares an id type: a UUID that only its own entity's code accepts, shown and parsed
/// as the hyphenated UUID, serialised as a plain UUID string. For domain crates' own
/// entities too:
///
/// ```
/// d2_kernel::typed_id!(
///     /// An invitation to join an account.
///     InvitationId
/// );
///
/// let id = InvitationId::random();
/// assert_eq!(id.to_string().parse::<InvitationId>().unwrap(), id);
/// assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
/// ```
#[macro_export]
macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            $crate::__private::serde::Serialize,
            $crate::__private::serde::Deserialize,
        )]
        #[serde(transparent, crate = "d2_kernel::__private::serde")]
        pub struct $name($crate::__private::uuid::Uuid);

        impl $name {
            /// A new random (v4) id.
            pub fn random() -> Self {
                Self($crate::__private::uuid::Uuid::new_v4())
            }

            /// A new id that sorts after the ids made before it (v7: the time in
            /// milliseconds, then 74 random bits), for rows written at a high rate: their
            /// index grows at its end, where random ids would touch (and, after each
            /// checkpoint, write whole into the WAL) a page anywhere in it.
            pub fn time_ordered() -> Self {
                Self($crate::__private::uuid::Uuid::now_v7())
            }

            pub const fn from_uuid(uuid: $crate::__private::uuid::Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> &$crate::__private::uuid::Uuid {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::__private::uuid::Error;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                $crate::__private::uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl ::std::convert::From<$crate::__private::uuid::Uuid> for $name {
            fn from(uuid: $crate::__private::uuid::Uuid) -> Self {
                Self(uuid)
            }
        }

        impl ::std::convert::From<$name> for $crate::__private::uuid::Uuid {
            fn from(id: $name) -> $crate::__private::uuid::Uuid {
                id.0
            }
        }
    };
}

typed_id!(
    /// A tenant.
    AccountId
);
typed_id!(
    /// A person (or service identity) belonging to an account.
    UserId
);
typed_id!(
    /// An API token. The id is public; the secret is never stored.
    TokenId
);
typed_id!(
    /// One version (or the draft) of an app's policy.
    PolicyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text_form() {
        let id = AccountId::random();
        let parsed: AccountId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        assert!("not-a-uuid".parse::<TokenId>().is_err());
    }

    #[test]
    fn time_ordered_ids_sort_in_the_order_they_were_made() {
        let made: Vec<TokenId> = (0..1_000).map(|_| TokenId::time_ordered()).collect();
        assert!(made.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(made.iter().all(|id| id.as_uuid().get_version_num() == 7));
        // Random ids, for contrast, do not (1,000 in order by chance: never).
        let random: Vec<TokenId> = (0..1_000).map(|_| TokenId::random()).collect();
        assert!(!random.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
