//! Client metadata documents fetched from `wiremock`: kept as the answer's cache headers
//! say, refused when too large, too slow, failing, or on a private address.

use std::time::Duration;

use d2_oauth::{ClientDocuments as _, FetchRefusal, document_limits};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::client_documents::MetadataDocuments;
use crate::{OutboundFetch, Reach};

fn documents() -> MetadataDocuments {
    let fetch = OutboundFetch::new(Reach::Any, None).unwrap();
    MetadataDocuments::waiting(fetch, Duration::from_millis(500)).unwrap()
}

async fn serving(status: u16, body: Vec<u8>, expected_fetches: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/client.json"))
        .respond_with(
            ResponseTemplate::new(status)
                .insert_header("cache-control", "max-age=600")
                .set_body_bytes(body),
        )
        .expect(expected_fetches)
        .mount(&server)
        .await;
    server
}

fn url_of(server: &MockServer) -> url::Url {
    url::Url::parse(&format!("{}/client.json", server.uri())).unwrap()
}

#[tokio::test]
async fn a_document_is_fetched_once_and_kept() {
    let body = br#"{"client_id": "x"}"#.to_vec();
    let server = serving(200, body.clone(), 1).await;
    let documents = documents();
    let url = url_of(&server);
    for _ in 0..3 {
        assert_eq!(&*documents.document(&url).await.unwrap(), body.as_slice());
    }
    server.verify().await;
}

#[tokio::test]
async fn a_document_over_the_limit_is_refused_and_the_refusal_kept() {
    let server = serving(200, vec![b' '; document_limits::BYTES + 1], 1).await;
    let documents = documents();
    let url = url_of(&server);
    for _ in 0..2 {
        let FetchRefusal(reason) = documents.document(&url).await.unwrap_err();
        assert!(reason.contains("answered more than 5120 bytes"), "{reason}");
    }
    server.verify().await;
}

#[tokio::test]
async fn a_failing_answer_is_refused() {
    let server = serving(404, b"{}".to_vec(), 1).await;
    let FetchRefusal(reason) = documents().document(&url_of(&server)).await.unwrap_err();
    assert!(reason.contains("404"), "{reason}");
}

#[tokio::test]
async fn a_slow_server_is_given_up_on() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("{}")
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let FetchRefusal(reason) = documents().document(&url_of(&server)).await.unwrap_err();
    assert!(reason.contains("failed"), "{reason}");
}

#[tokio::test]
async fn a_private_address_is_never_connected_to() {
    let server = serving(200, b"{}".to_vec(), 0).await;
    let documents = MetadataDocuments::new(OutboundFetch::public()).unwrap();
    let FetchRefusal(reason) = documents.document(&url_of(&server)).await.unwrap_err();
    assert_eq!(reason, "its address is not public");
    let by_name = url::Url::parse("https://localhost/client.json").unwrap();
    let FetchRefusal(reason) = documents.document(&by_name).await.unwrap_err();
    assert!(reason.contains("no public address"), "{reason}");
    server.verify().await;
}
