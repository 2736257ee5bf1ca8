//! Reservations: credits held before long work and settled for what it cost after.
//!
//! A reservation is a spend that can be partly undone: reserving takes its credits from
//! the grants like any spend (so concurrent work cannot spend them twice), and settling
//! for the actual cost gives the rest back, to the grants taken last ([`plan_release`]).
//! A reservation not settled by its expiry is released whole by the worker's
//! `reservation-expiry` job; settling it after that is refused.

use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;

use crate::credits::{Burn, CreditGrant};
use crate::ledger::{EntryId, LedgerEntry};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reservation status `{0}`")]
pub struct UnknownReservationStatus(pub String);

d2_kernel::named_values! {
    /// Where a reservation stands. The names are stored.
    pub enum ReservationStatus (unknown: UnknownReservationStatus) {
        /// Its credits are held.
        Held = "held",
        /// Settled for `settled_amount`; the rest given back.
        Settled = "settled",
        /// Not settled by its expiry: all given back.
        Expired = "expired",
    }
}

/// Credits held for work under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Its reserve ledger entry's id.
    pub id: EntryId,
    pub amount: u64,
    /// What reserving took from each grant.
    pub burns: Vec<Burn>,
    pub status: ReservationStatus,
    /// What the work cost, once settled.
    pub settled_amount: Option<u64>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When it was settled or expired.
    pub closed_at: Option<DateTime<Utc>>,
}

/// What closing a reservation writes.
#[derive(Debug, Clone)]
pub struct Closing {
    /// The reservation as it is after.
    pub reservation: Reservation,
    /// The release entry (what is given back, to which grants); `None` for a retry of a
    /// settlement made before, which writes nothing.
    pub release: Option<LedgerEntry>,
    pub audit: Option<AuditEntry>,
}

/// Why a reservation cannot be closed as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseRefusal {
    /// Released at its expiry.
    Expired,
    /// Settled before, for another amount.
    Settled { amount: u64 },
    /// More than was reserved.
    AboveReservation { reserved: u64 },
    /// Still held (the expiry job found it settled or not yet due).
    NotDue,
}

/// Decides how to close a reservation, from the account's grants and the reservation.
pub type CloseOf<'a> =
    &'a (dyn Fn(&[CreditGrant], &Reservation) -> Result<Closing, CloseRefusal> + Send + Sync);
