//! The credits ledger's arithmetic: grants of credits and the order they are spent in.
//!
//! Credits are whole units (`u64`): a price of a fraction of a credit is expressed per
//! a larger quantity (credits per million tokens) and rounded up once per report, so a
//! balance is exact and never a float. A grant has a source, a priority, the time it takes
//! effect and, perhaps, an expiry; spending burns grants down by priority (lowest number
//! first), then earliest expiry (never-expiring last), then the oldest to take effect,
//! then id: the order OpenMeter's and Stripe's credit grants use, so promotional credits
//! that expire soon go before purchased ones that do not. What a spend takes from each
//! grant is recorded ([`Burn`]), so a reservation settled for less gives back exactly
//! what it took, to the grants it took it from.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

d2_kernel::typed_id!(
    /// A grant of credits to an account.
    GrantId
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown credit source `{0}`")]
pub struct UnknownSource(pub String);

d2_kernel::named_values! {
    /// Where a grant's credits come from. The names are stored.
    pub enum GrantSource (unknown: UnknownSource) {
        /// Bought (a checkout of the payment provider, or added by an admin for one).
        Purchase = "purchase",
        /// Included in the plan for one period.
        Plan = "plan",
        /// Given: a promotion, a refund, a goodwill credit.
        Promotion = "promotion",
    }
}

/// Credits granted to an account, and what is left of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditGrant {
    pub id: GrantId,
    pub source: GrantSource,
    /// Credits granted.
    pub amount: u64,
    /// Credits not spent (nor held by a reservation) yet.
    pub remaining: u64,
    /// Lower is spent first.
    pub priority: u8,
    pub effective_at: DateTime<Utc>,
    /// From then on its remaining credits are gone.
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreditGrant {
    /// Whether its credits may be spent at `now`: in effect, not expired, not spent.
    pub fn is_spendable_at(&self, now: DateTime<Utc>) -> bool {
        self.remaining > 0
            && self.effective_at <= now
            && self.expires_at.is_none_or(|expiry| now < expiry)
    }

    /// The order grants are spent in.
    pub fn burn_order(&self, other: &Self) -> Ordering {
        let expiry = |grant: &Self| (grant.expires_at.is_none(), grant.expires_at);
        self.priority
            .cmp(&other.priority)
            .then_with(|| expiry(self).cmp(&expiry(other)))
            .then_with(|| self.effective_at.cmp(&other.effective_at))
            .then_with(|| self.id.cmp(&other.id))
    }
}

/// The credits of `grants` that may be spent at `now`.
pub fn balance(grants: &[CreditGrant], now: DateTime<Utc>) -> u64 {
    grants
        .iter()
        .filter(|grant| grant.is_spendable_at(now))
        .fold(0, |sum, grant| sum.saturating_add(grant.remaining))
}

/// What one spend takes from one grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burn {
    pub grant: GrantId,
    pub amount: u64,
}

/// A spend larger than the credits that may be spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{requested} credits asked, {available} available")]
pub struct InsufficientCredits {
    pub requested: u64,
    pub available: u64,
}

/// Which grants a spend of `amount` at `now` takes from, and how much from each, in burn
/// order; all or nothing. A spend of 0 takes nothing.
pub fn plan_spend(
    grants: &[CreditGrant],
    amount: u64,
    now: DateTime<Utc>,
) -> Result<Vec<Burn>, InsufficientCredits> {
    let available = balance(grants, now);
    if amount > available {
        return Err(InsufficientCredits {
            requested: amount,
            available,
        });
    }
    let mut spendable: Vec<&CreditGrant> = grants
        .iter()
        .filter(|grant| grant.is_spendable_at(now))
        .collect();
    spendable.sort_by(|a, b| a.burn_order(b));
    Ok(take(
        amount,
        spendable
            .into_iter()
            .map(|grant| (grant.id, grant.remaining)),
    ))
}

/// What settling a reservation that took `burns` for `actual` credits gives back: the
/// difference, returned to the grants taken last first (so the grants that were to be
/// spent first stay spent). `None` when `actual` is above what was reserved.
pub fn plan_release(burns: &[Burn], actual: u64) -> Option<Vec<Burn>> {
    let reserved = burns
        .iter()
        .fold(0_u64, |sum, burn| sum.saturating_add(burn.amount));
    let back = reserved.checked_sub(actual)?;
    Some(take(
        back,
        burns.iter().rev().map(|burn| (burn.grant, burn.amount)),
    ))
}

/// `amount` taken from `sources` (each a grant and what it can give) in their order,
/// each giving what it can until nothing is left.
fn take(amount: u64, sources: impl Iterator<Item = (GrantId, u64)>) -> Vec<Burn> {
    let mut left = amount;
    let mut burns = Vec::new();
    for (grant, available) in sources {
        if left == 0 {
            break;
        }
        let taken = left.min(available);
        burns.push(Burn {
            grant,
            amount: taken,
        });
        left = left.saturating_sub(taken);
    }
    burns
}

/// The credits `quantity` units cost at `price` credits per `per` units, rounded up (a
/// report of any usage costs at least one credit when its price is not zero). `None` on
/// overflow or a `per` of zero.
pub fn cost(quantity: u64, price: u64, per: u64) -> Option<u64> {
    if per == 0 {
        return None;
    }
    let total = u128::from(quantity).checked_mul(u128::from(price))?;
    let per = u128::from(per);
    let credits = total.checked_add(per.checked_sub(1)?)?.checked_div(per)?;
    u64::try_from(credits).ok()
}
