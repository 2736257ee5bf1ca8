//! Closed sets of named values (scopes, audit actions), each value named once.

/// Declares a closed set of values, each named once: the enum (with `Clone`, `Copy`,
/// `Debug`, `PartialEq`, `Eq`, `Hash`, `PartialOrd`, `Ord`), `ALL` in declaration order,
/// `as_str`, `Display`, and `FromStr`, which fails with `$unknown(text)` (a tuple struct
/// the caller declares, so each set keeps its own error message).
///
/// ```
/// #[derive(Debug, PartialEq)]
/// pub struct UnknownColour(pub String);
///
/// d2_kernel::named_values! {
///     /// A colour.
///     pub enum Colour (unknown: UnknownColour) {
///         Red = "red",
///         /// Not quite blue.
///         Teal = "teal",
///     }
/// }
///
/// assert_eq!(Colour::ALL, [Colour::Red, Colour::Teal]);
/// assert_eq!("teal".parse::<Colour>(), Ok(Colour::Teal));
/// assert_eq!("pink".parse::<Colour>(), Err(UnknownColour("pink".to_owned())));
/// assert_eq!(Colour::Red.to_string(), "red");
/// ```
#[macro_export]
macro_rules! named_values {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident (unknown: $unknown:ident) {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; $crate::named_values!(@count $($variant)+)] =
                [$($name::$variant),+];

            /// The stable name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $unknown;

            fn from_str(text: &str) -> ::std::result::Result<Self, Self::Err> {
                $name::ALL
                    .into_iter()
                    .find(|value| value.as_str() == text)
                    .ok_or_else(|| $unknown(text.to_owned()))
            }
        }
    };
    (@count) => { 0 };
    (@count $head:ident $($tail:ident)*) => { 1 + $crate::named_values!(@count $($tail)*) };
}
