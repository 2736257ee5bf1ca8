//! The ledger's arithmetic and the forecast, on known grants and known series.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::credits::{
    Burn, CreditGrant, GrantId, GrantSource, InsufficientCredits, balance, cost, plan_release,
    plan_spend,
};
use crate::forecast::forecast;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

fn grant(
    source: GrantSource,
    remaining: u64,
    priority: u8,
    effective: i64,
    expires: Option<i64>,
) -> CreditGrant {
    CreditGrant {
        id: GrantId::random(),
        source,
        amount: remaining,
        remaining,
        priority,
        effective_at: now() + Duration::days(effective),
        expires_at: expires.map(|days| now() + Duration::days(days)),
    }
}

#[test]
fn spends_burn_by_priority_then_earliest_expiry_and_never_overdraw() {
    let purchased = grant(GrantSource::Purchase, 100, 5, -10, None);
    let plan = grant(GrantSource::Plan, 30, 5, -1, Some(20));
    let promotion = grant(GrantSource::Promotion, 20, 5, -3, Some(2));
    let urgent = grant(GrantSource::Promotion, 5, 1, -1, None);
    let expired = grant(GrantSource::Promotion, 50, 0, -9, Some(-1));
    let future = grant(GrantSource::Plan, 70, 0, 1, None);
    let spent = CreditGrant {
        remaining: 0,
        ..grant(GrantSource::Purchase, 9, 0, -1, None)
    };
    let grants = vec![
        purchased.clone(),
        plan.clone(),
        promotion.clone(),
        urgent.clone(),
        expired,
        future,
        spent,
    ];
    assert_eq!(balance(&grants, now()), 155);

    // Priority 1 first, then at priority 5 the soonest to expire; never-expiring last.
    let burns = plan_spend(&grants, 60, now());
    assert_eq!(
        burns,
        Ok(vec![
            Burn {
                grant: urgent.id,
                amount: 5
            },
            Burn {
                grant: promotion.id,
                amount: 20
            },
            Burn {
                grant: plan.id,
                amount: 30
            },
            Burn {
                grant: purchased.id,
                amount: 5
            },
        ])
    );
    assert_eq!(plan_spend(&grants, 0, now()), Ok(Vec::new()));
    assert_eq!(
        plan_spend(&grants, 156, now()),
        Err(InsufficientCredits {
            requested: 156,
            available: 155
        })
    );
    // At their expiry, grants stop counting; at its effective time, a grant starts.
    assert_eq!(balance(&grants, now() + Duration::days(2)), 205);
}

#[test]
fn a_settled_reservation_gives_back_to_the_grants_taken_last() {
    let (a, b, c) = (GrantId::random(), GrantId::random(), GrantId::random());
    let burns = [
        Burn {
            grant: a,
            amount: 5,
        },
        Burn {
            grant: b,
            amount: 20,
        },
        Burn {
            grant: c,
            amount: 10,
        },
    ];
    assert_eq!(
        plan_release(&burns, 12),
        Some(vec![
            Burn {
                grant: c,
                amount: 10
            },
            Burn {
                grant: b,
                amount: 13
            },
        ])
    );
    assert_eq!(plan_release(&burns, 35), Some(Vec::new()));
    assert_eq!(plan_release(&burns, 36), None, "above the reservation");
}

#[test]
fn costs_round_up_once_per_report_and_refuse_overflow() {
    // 3 credits per million tokens.
    assert_eq!(cost(1_000_000, 3, 1_000_000), Some(3));
    assert_eq!(cost(1, 3, 1_000_000), Some(1));
    assert_eq!(cost(0, 3, 1_000_000), Some(0));
    assert_eq!(cost(1_500_000, 3, 1_000_000), Some(5));
    assert_eq!(cost(7, 0, 1_000_000), Some(0));
    assert_eq!(cost(1, 1, 0), None);
    assert_eq!(cost(u64::MAX, u64::MAX, 1), None);
}

#[test]
fn the_forecast_weighs_recent_days_most_on_known_series() {
    let end = now() + Duration::days(15);
    // A steady 10 a day: 150 more by the end; 35 credits last three and a half days.
    let steady = forecast(&[10; 7], 100, now(), end, 35);
    assert_eq!(steady.daily_rate, 10);
    assert_eq!(steady.projected_period_usage, 250);
    assert_eq!(
        steady.runs_out_at,
        Some(now() + Duration::days(3) + Duration::hours(12))
    );
    // A ramp 1..7: (1*1 + 2*2 + ... + 7*7) / (1 + ... + 7) = 140 / 28 = 5 a day; the days
    // before the window do not count.
    let ramp = forecast(&[1000, 1, 2, 3, 4, 5, 6, 7], 0, now(), end, 10);
    assert_eq!(ramp.daily_rate, 5);
    assert_eq!(ramp.projected_period_usage, 75);
    assert_eq!(ramp.runs_out_at, Some(now() + Duration::days(2)));
    // One spike on the last day: 70 * 7 / 28 = 17.5 a day, rounded up when shown...
    let spike = forecast(&[0, 0, 0, 0, 0, 0, 70], 70, now(), end, 1000);
    assert_eq!(spike.daily_rate, 18);
    // ...but exact over the rest of the period: 17.5 * 15 = 262.5, rounded up once.
    assert_eq!(spike.projected_period_usage, 70 + 263);
    // ...and a week later it has faded out.
    let faded = forecast(&[70, 0, 0, 0, 0, 0, 0, 0], 70, now(), end, 1000);
    assert_eq!(faded.daily_rate, 0);
    assert_eq!(faded.runs_out_at, None);
    // Nothing used yet, or a period already over.
    let quiet = forecast(&[], 0, now(), end, 10);
    assert_eq!((quiet.daily_rate, quiet.projected_period_usage), (0, 0));
    assert_eq!(quiet.runs_out_at, None);
    let over = forecast(&[10; 7], 300, end + Duration::days(1), end, 0);
    assert_eq!(over.projected_period_usage, 300);
    assert_eq!(over.runs_out_at, Some(end + Duration::days(1)));
}
