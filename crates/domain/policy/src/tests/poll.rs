//! The SDK's poll: app resolution, 304s, the ceiling, revocation and drafts.

use super::*;

#[tokio::test]
async fn polls_resolve_the_app_answer_304_stop_at_the_ceiling_and_report_revocation() {
    let w = world_with(PolicySettings {
        poll_ceiling: PollCeiling {
            per_second: 1,
            burst: 14,
        },
        ..PolicySettings::default()
    });
    let published = w
        .publish(&w.dev(), &policy("billing", &["a"], false), None, false)
        .await
        .unwrap();
    let server = caller(w.account, &[Grant::Server], Some("billing"));

    let hint = w
        .policies
        .poll(&w.dev(), None, BundleStage::Auto, None)
        .await
        .unwrap_err();
    assert_eq!(hint.code(), Code::AppRequired);
    assert!(
        hint.to_string()
            .contains("app_name required for non-server tokens")
    );
    assert!(
        hint.to_string()
            .contains("server tokens have automatic app resolution")
    );

    let Poll::Bundle {
        record,
        poll_seconds,
        limit,
    } = w
        .policies
        .poll(&server, None, BundleStage::Auto, None)
        .await
        .unwrap()
    else {
        unreachable!("a bundle");
    };
    assert_eq!(record.jws, published.jws);
    assert_eq!(
        poll_seconds, 300,
        "the plan's interval is advice to the SDK"
    );
    assert_eq!((limit.limit, limit.remaining), (14, 13));
    let quoted = format!("W/\"{}\"", published.etag);
    for _ in 0..10 {
        let answer = w
            .policies
            .poll(&server, None, BundleStage::Auto, Some(&quoted))
            .await
            .unwrap();
        assert!(matches!(answer, Poll::NotModified { .. }));
    }
    // Full fetches back to back are fine until the ceiling, which 304s spend from too.
    for _ in 0..3 {
        w.policies
            .poll(&server, None, BundleStage::Auto, None)
            .await
            .unwrap();
    }
    let limited = w
        .policies
        .poll(&server, None, BundleStage::Auto, None)
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::RateLimited);
    let limit = limited.rate_limit().unwrap();
    assert_eq!((limit.limit, limit.remaining), (14, 0));
    assert_eq!(limit.retry_after_seconds, 1);

    let admin = w.admin();
    w.policies.revoke(&admin, "billing").await.unwrap();
    let other_token = caller(w.account, &[Grant::Server], Some("billing"));
    let gone = w
        .policies
        .poll(&other_token, None, BundleStage::Auto, None)
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::PolicyRevoked);
    assert_eq!(
        w.policies
            .revoke(&admin, "billing")
            .await
            .unwrap_err()
            .code(),
        Code::PolicyNotFound
    );
    let dev_revoke = w.policies.revoke(&w.dev(), "billing").await.unwrap_err();
    assert_eq!(dev_revoke.code(), Code::InsufficientScope);
}

#[tokio::test]
async fn drafts_are_served_only_when_asked_or_nothing_is_published() {
    let w = world();
    let draft = w
        .policies
        .save_draft(&w.dev(), json!({ "bundle": policy("app", &["a"], false) }))
        .await
        .unwrap();
    assert_eq!(draft.stage, Stage::Draft);
    assert_eq!(draft.version, 1);
    let server = caller(w.account, &[Grant::Server], Some("app"));
    let Poll::Bundle { record, .. } = w
        .policies
        .poll(&server, None, BundleStage::Auto, None)
        .await
        .unwrap()
    else {
        unreachable!("the draft");
    };
    assert!(record.jws.is_none());
    let published = w
        .policies
        .poll(&server, None, BundleStage::Published, None)
        .await
        .unwrap_err();
    assert_eq!(published.code(), Code::PolicyNotFound);
    let live = w
        .publish(&w.dev(), &policy("app", &["a"], false), None, false)
        .await
        .unwrap();
    assert_eq!(live.version, 2, "versions count drafts too");
    assert!(
        w.policies
            .versions(&w.dev(), "app", &PageRequest::first(100))
            .await
            .unwrap()
            .items
            .iter()
            .all(|r| r.stage == Stage::Published),
        "the draft was consumed"
    );
}
