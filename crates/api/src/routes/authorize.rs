//! The authorization code flow's browser side (RFC 6749 §4.1, OAuth 2.1): the
//! authorization endpoint, sign-in at the identity provider, the consent page, and the
//! page where a person sees and withdraws their consents. HTML for people, not part of the
//! JSON API (nor of its OpenAPI document).
//!
//! ```text
//! GET  /oauth/{account}/authorize        checks the request; signed in? else to the provider
//! GET  /oauth/signin/callback            back from the provider: the person, in a cookie
//! GET  /oauth/{account}/consent          continues a request after sign-in
//! POST /oauth/{account}/authorize        the consent form's answer: approve or deny
//! GET  /oauth/{account}/consents         the person's consents
//! POST /oauth/{account}/consents/{id}/withdraw
//! ```
//!
//! Errors that prove where to answer go back to the client's redirect URI with `state`
//! and `iss` (RFC 9207); the others are shown to the person. Forms carry a sealed token
//! bound to the signed-in person (and cookies are `SameSite=Lax`), so another site cannot
//! answer for them.

use std::collections::BTreeSet;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::{StatusCode, header};
use actix_web::web::{self, Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use d2_kernel::{AccountId, ErrorChain};
use d2_oauth::{
    AuthorizationRequest, AuthorizeError, AuthorizeParams, Delegation, DelegationId, Principal,
    PrincipalId, Prompt, ReturnTo, SignInError, SignInRequest, SignedInPerson, authorize_errors,
    issuer_url,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::pages::{checkboxes, error_page, escape, page};
use crate::seal::Purpose;
use crate::state::ApiState;

/// The cookie of the signed-in person.
const SIGNED_IN: &str = "d2_signin";
/// The cookie of a sign-in in progress.
const SIGN_IN_FLOW: &str = "d2_signin_flow";
/// How long a sign-in here lasts.
const SESSION_MINUTES: i64 = 60;
/// How long a person has to finish signing in, or to answer a consent page.
const STEP_MINUTES: i64 = 10;
/// Characters of a query or form the pages read.
const MAX_INPUT: usize = 16 * 1024;

pub fn page_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/oauth/signin/callback").route(web::get().to(sign_in_callback)))
        .service(
            web::resource("/oauth/{account_id}/authorize")
                .route(web::get().to(authorize))
                .route(web::post().to(decide)),
        )
        .service(web::resource("/oauth/{account_id}/consent").route(web::get().to(resume)))
        .service(web::resource("/oauth/{account_id}/consents").route(web::get().to(consents)))
        .service(
            web::resource("/oauth/{account_id}/consents/{delegation_id}/withdraw")
                .route(web::post().to(withdraw)),
        );
}

/// A sign-in in progress: what binds the provider's answer to it, and where it goes on.
#[derive(Serialize, Deserialize)]
struct SignInFlow {
    state: String,
    nonce: String,
    verifier: String,
    next: Next,
}

/// Where a sign-in goes on.
#[derive(Serialize, Deserialize)]
enum Next {
    /// The consent step of this (sealed) request.
    Consent { account: AccountId, request: String },
    /// The consents page of the account.
    Consents { account: AccountId },
}

/// The consent page's form: whose page it is and what it answers.
#[derive(Serialize, Deserialize)]
struct ConsentForm {
    request: AuthorizationRequest,
    subject: String,
    principal: PrincipalId,
}

/// A form of the consents page: whose.
#[derive(Serialize, Deserialize)]
struct ConsentsForm {
    account: AccountId,
    subject: String,
}

/// The signed-in person, as the cookie holds them.
#[derive(Serialize, Deserialize)]
struct Person {
    subject: String,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
    auth_time: DateTime<Utc>,
}

impl From<&Person> for SignedInPerson {
    fn from(person: &Person) -> Self {
        SignedInPerson {
            subject: person.subject.clone(),
            email: person.email.clone(),
            email_verified: person.email_verified,
            name: person.name.clone(),
            auth_time: person.auth_time,
        }
    }
}

/// Pairs of a query string or form body.
fn pairs(text: &[u8]) -> Option<Vec<(String, String)>> {
    (text.len() <= MAX_INPUT).then(|| {
        url::form_urlencoded::parse(text)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
}

/// The one value of `name` (empty counts as absent); `Err` when given twice.
fn single<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, String> {
    let mut found = pairs.iter().filter(|(k, v)| k == name && !v.is_empty());
    let first = found.next().map(|(_, v)| v.as_str());
    if found.next().is_some() {
        return Err(format!("`{name}` is given more than once"));
    }
    Ok(first)
}

fn all(pairs: &[(String, String)], name: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect()
}

fn random_text() -> Option<String> {
    let mut bytes = [0_u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

fn later(minutes: i64) -> DateTime<Utc> {
    d2_kernel::later(Utc::now(), Duration::minutes(minutes))
}

fn cookie<'a>(state: &ApiState, name: &'a str, value: String, minutes: i64) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/oauth/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.public_base.starts_with("https://"))
        .max_age(CookieDuration::minutes(minutes))
        .finish()
}

fn removal<'a>(state: &ApiState, name: &'a str) -> Cookie<'a> {
    let mut cookie = cookie(state, name, String::new(), 0);
    cookie.make_removal();
    cookie
}

fn unavailable(detail: &str) -> HttpResponse {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        detail,
    )
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The person the request's cookie names, if any and not expired.
fn signed_in(state: &ApiState, request: &HttpRequest) -> Option<Person> {
    let cookie = request.cookie(SIGNED_IN)?;
    state
        .sealer
        .open(Purpose::SignedIn, cookie.value(), Utc::now())
}

/// The account of the path, if it exists; else the page to show.
async fn existing_account(state: &ApiState, segment: &str) -> Result<AccountId, HttpResponse> {
    let not_found = || {
        error_page(
            StatusCode::NOT_FOUND,
            "account_not_found",
            "No authorization server has this address.",
        )
    };
    let account: AccountId = segment.parse().map_err(|_| not_found())?;
    match state.app.accounts.exists(account).await {
        Ok(true) => Ok(account),
        Ok(false) => Err(not_found()),
        Err(error) => {
            tracing::warn!(error.cause = %ErrorChain(&error), "the account could not be read");
            Err(unavailable(
                "The server cannot read the account now. Try again shortly.",
            ))
        }
    }
}

/// The client's redirect URI with the answer's parameters, `state` and `iss` added.
fn redirect_to(state: &ApiState, request: &ReturnTo, answer: &[(&str, &str)]) -> HttpResponse {
    let Ok(mut url) = url::Url::parse(&request.redirect_uri) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "The application's redirect address is not valid.",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in answer {
            query.append_pair(name, value);
        }
        if let Some(client_state) = &request.state {
            query.append_pair("state", client_state);
        }
        query.append_pair("iss", &issuer_url(&state.public_base, request.account_id));
    }
    HttpResponse::Found()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The answer to a refused request: back to the client when the request proved where,
/// else a page.
fn refused(state: &ApiState, request: Option<&ReturnTo>, error: AuthorizeError) -> HttpResponse {
    match (error, request) {
        (AuthorizeError::Unredirectable { code, description }, _) => {
            error_page(StatusCode::BAD_REQUEST, code, &description)
        }
        (AuthorizeError::Redirect { error, description }, Some(request)) => redirect_to(
            state,
            request,
            &[("error", error), ("error_description", &description)],
        ),
        (AuthorizeError::Redirect { error, description }, None) => {
            error_page(StatusCode::BAD_REQUEST, error, &description)
        }
        (AuthorizeError::Store(error), _) => {
            tracing::warn!(error.cause = %ErrorChain(&error), "the authorization request could not be served");
            unavailable("The server cannot answer now. Try again shortly.")
        }
    }
}

/// `GET /oauth/{account_id}/authorize`
async fn authorize(
    state: Data<ApiState>,
    account_id: Path<String>,
    http: HttpRequest,
) -> HttpResponse {
    let account = match existing_account(&state, &account_id).await {
        Ok(account) => account,
        Err(page) => return page,
    };
    let Some(query) = pairs(http.query_string().as_bytes()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request is too long.",
        );
    };
    let params = match read_params(&query) {
        Ok(params) => params,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, "invalid_request", &message),
    };
    let authorizations = &state.app.oauth.authorizations;
    let (request, _agent) = match authorizations.check(account, &params).await {
        Ok(checked) => checked,
        Err((error, return_to)) => return refused(&state, return_to.as_ref(), error),
    };
    let person = signed_in(&state, &http).filter(|_| request.prompt != Prompt::Login);
    match person {
        Some(person) => consent_step(&state, &request, &person).await,
        None if request.prompt == Prompt::None => redirect_to(
            &state,
            &request.return_to(),
            &[
                ("error", authorize_errors::LOGIN_REQUIRED),
                ("error_description", "the user is not signed in"),
            ],
        ),
        None => {
            let Some(sealed) = state
                .sealer
                .seal(Purpose::Request, &request, later(STEP_MINUTES))
            else {
                return unavailable("The server cannot seal the request now.");
            };
            start_sign_in(
                &state,
                Next::Consent {
                    account,
                    request: sealed,
                },
                Some(&request),
            )
            .await
        }
    }
}

/// Reads `GET /authorize`'s parameters, each at most once (`resource` repeats).
fn read_params(query: &[(String, String)]) -> Result<AuthorizeParams, String> {
    let one = |name| single(query, name).map(|value| value.map(str::to_owned));
    Ok(AuthorizeParams {
        response_type: one("response_type")?,
        client_id: one("client_id")?,
        redirect_uri: one("redirect_uri")?,
        scope: one("scope")?,
        state: one("state")?,
        code_challenge: one("code_challenge")?,
        code_challenge_method: one("code_challenge_method")?,
        nonce: one("nonce")?,
        resources: all(query, "resource"),
        prompt: one("prompt")?,
    })
}

/// Sends the browser to the identity provider, remembering where to go on.
async fn start_sign_in(
    state: &ApiState,
    next: Next,
    request: Option<&AuthorizationRequest>,
) -> HttpResponse {
    let Some(sign_in) = &state.app.browser_sign_in else {
        let message =
            "This server signs no one in through a browser (`auth.idp.client_id` is not set).";
        return match request {
            Some(request) => redirect_to(
                state,
                &request.return_to(),
                &[
                    ("error", "temporarily_unavailable"),
                    ("error_description", message),
                ],
            ),
            None => unavailable(message),
        };
    };
    let (Some(flow_state), Some(nonce), Some(verifier)) =
        (random_text(), random_text(), random_text())
    else {
        return unavailable("The server cannot start a sign-in now.");
    };
    let redirect_uri = callback_uri(state);
    let url = sign_in
        .authorization_url(&SignInRequest {
            redirect_uri: &redirect_uri,
            state: &flow_state,
            nonce: &nonce,
            code_verifier: &verifier,
        })
        .await;
    let url = match url {
        Ok(url) => url,
        Err(error) => {
            tracing::warn!(error = %error, "the identity provider cannot be reached");
            return unavailable("The identity provider cannot be reached now. Try again shortly.");
        }
    };
    let flow = SignInFlow {
        state: flow_state,
        nonce,
        verifier,
        next,
    };
    let Some(sealed) = state
        .sealer
        .seal(Purpose::SignInFlow, &flow, later(STEP_MINUTES))
    else {
        return unavailable("The server cannot start a sign-in now.");
    };
    HttpResponse::Found()
        .cookie(cookie(state, SIGN_IN_FLOW, sealed, STEP_MINUTES))
        .insert_header((header::LOCATION, url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn callback_uri(state: &ApiState) -> String {
    format!("{}/oauth/signin/callback", state.public_base)
}

/// `GET /oauth/signin/callback`: the provider's answer.
async fn sign_in_callback(state: Data<ApiState>, http: HttpRequest) -> HttpResponse {
    let flow: Option<SignInFlow> = http.cookie(SIGN_IN_FLOW).and_then(|cookie| {
        state
            .sealer
            .open(Purpose::SignInFlow, cookie.value(), Utc::now())
    });
    let Some(query) = pairs(http.query_string().as_bytes()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request is too long.",
        );
    };
    let value = |name| single(&query, name).ok().flatten();
    let Some(flow) = flow.filter(|flow| value("state") == Some(flow.state.as_str())) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "sign_in_expired",
            "This sign-in was not started here, or took too long. Start again from the application.",
        );
    };
    if let Some(error) = value("error") {
        return error_page(
            StatusCode::UNAUTHORIZED,
            "sign_in_refused",
            &format!("The identity provider did not sign you in ({error})."),
        );
    }
    let (Some(code), Some(sign_in)) = (value("code"), &state.app.browser_sign_in) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The identity provider sent no code.",
        );
    };
    let redirect_uri = callback_uri(&state);
    let person = sign_in
        .redeem(
            code,
            &SignInRequest {
                redirect_uri: &redirect_uri,
                state: &flow.state,
                nonce: &flow.nonce,
                code_verifier: &flow.verifier,
            },
        )
        .await;
    let person = match person {
        Ok(person) => person,
        Err(SignInError::Refused(reason)) => {
            tracing::info!(reason = %reason, "browser sign-in refused");
            return error_page(
                StatusCode::UNAUTHORIZED,
                "sign_in_refused",
                "The identity provider's answer could not be verified. Start again from the application.",
            );
        }
        Err(SignInError::Unavailable(reason)) => {
            tracing::warn!(reason = %reason, "browser sign-in failed");
            return unavailable("The identity provider cannot be reached now. Try again shortly.");
        }
    };
    tracing::info!(idp.subject = %person.subject, "signed in through the browser");
    let person = Person {
        subject: person.subject,
        email: person.email,
        email_verified: person.email_verified,
        name: person.name,
        auth_time: person.auth_time,
    };
    let Some(sealed) = state
        .sealer
        .seal(Purpose::SignedIn, &person, later(SESSION_MINUTES))
    else {
        return unavailable("The server cannot keep the sign-in now.");
    };
    let location = match &flow.next {
        Next::Consent { account, request } => {
            let mut url = format!("{}/oauth/{account}/consent?", state.public_base);
            url.push_str(
                &url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("request", request)
                    .finish(),
            );
            url
        }
        Next::Consents { account } => format!("{}/oauth/{account}/consents", state.public_base),
    };
    HttpResponse::SeeOther()
        .cookie(cookie(&state, SIGNED_IN, sealed, SESSION_MINUTES))
        .cookie(removal(&state, SIGN_IN_FLOW))
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `GET /oauth/{account_id}/consent?request=…`: a request goes on after sign-in.
async fn resume(
    state: Data<ApiState>,
    account_id: Path<String>,
    http: HttpRequest,
) -> HttpResponse {
    let account = match existing_account(&state, &account_id).await {
        Ok(account) => account,
        Err(page) => return page,
    };
    let sealed = pairs(http.query_string().as_bytes())
        .and_then(|query| single(&query, "request").ok().flatten().map(str::to_owned));
    let request: Option<AuthorizationRequest> = sealed
        .as_deref()
        .and_then(|text| state.sealer.open(Purpose::Request, text, Utc::now()));
    let Some(request) = request.filter(|request| request.account_id == account) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "request_expired",
            "This authorization request expired. Start again from the application.",
        );
    };
    match signed_in(&state, &http) {
        Some(person) => consent_step(&state, &request, &person).await,
        None => {
            let next = Next::Consent {
                account,
                request: sealed.unwrap_or_default(),
            };
            start_sign_in(&state, next, Some(&request)).await
        }
    }
}

/// The principal the signed-in `person` is in `account`, or the page saying why none.
async fn principal_or_page(
    state: &ApiState,
    account: AccountId,
    person: &Person,
) -> Result<Principal, HttpResponse> {
    match state
        .app
        .oauth
        .authorizations
        .principal_of(account, &person.into())
        .await
    {
        Ok(Ok(principal)) => Ok(principal),
        Ok(Err(refusal)) => Err(error_page(
            StatusCode::FORBIDDEN,
            "not_a_user",
            &format!(
                "{refusal}. You are signed in as {}.",
                person.email.as_deref().unwrap_or(&person.subject)
            ),
        )),
        Err(error) => Err(refused(state, None, error)),
    }
}

/// The signed-in `person` answers `request`: a remembered consent answers at once,
/// otherwise the consent page asks.
async fn consent_step(
    state: &ApiState,
    request: &AuthorizationRequest,
    person: &Person,
) -> HttpResponse {
    let authorizations = &state.app.oauth.authorizations;
    let principal = match principal_or_page(state, request.account_id, person).await {
        Ok(principal) => principal,
        Err(page) => return page,
    };
    if request.prompt != Prompt::Consent {
        match authorizations.remembered(request, principal.id).await {
            Ok(Some(grant)) => {
                return issue_code(state, request, principal.id, &grant, person.auth_time).await;
            }
            Ok(None) => {}
            Err(error) => return refused(state, Some(&request.return_to()), error),
        }
    }
    if request.prompt == Prompt::None {
        return redirect_to(
            state,
            &request.return_to(),
            &[
                ("error", authorize_errors::CONSENT_REQUIRED),
                (
                    "error_description",
                    "the user has not consented to this request",
                ),
            ],
        );
    }
    let agent = match authorizations.agent_of(request).await {
        Ok(Some(agent)) => agent,
        Ok(None) => {
            return refused(
                state,
                Some(&request.return_to()),
                AuthorizeError::Redirect {
                    error: authorize_errors::UNAUTHORIZED_CLIENT,
                    description: "the agent is no longer active".into(),
                },
            );
        }
        Err(error) => return refused(state, Some(&request.return_to()), error),
    };
    let view = match authorizations.view_of(request, &agent).await {
        Ok(view) => view,
        Err(error) => return refused(state, Some(&request.return_to()), error),
    };
    let form = ConsentForm {
        request: request.clone(),
        subject: person.subject.clone(),
        principal: principal.id,
    };
    let Some(token) = state
        .sealer
        .seal(Purpose::ConsentForm, &form, later(STEP_MINUTES))
    else {
        return unavailable("The server cannot show the consent page now.");
    };
    let who = principal
        .spec
        .display_name
        .as_deref()
        .or(person.email.as_deref())
        .unwrap_or(&principal.spec.username);
    let description = view
        .agent_description
        .as_deref()
        .map(|d| format!("<p class=\"muted\">{}</p>", escape(d)))
        .unwrap_or_default();
    let publisher = view
        .metadata_host
        .as_deref()
        .map(|host| {
            format!(
                "<p>This application names itself; its description is published by \
                 <span class=\"host\" id=\"metadata-host\">{}</span>.</p>",
                escape(host)
            )
        })
        .unwrap_or_default();
    let tools = if view.items.tools.is_empty() {
        String::new()
    } else {
        format!(
            "<fieldset><legend>Tools it may call for you</legend>{}</fieldset>",
            checkboxes("tool", &view.items.tools)
        )
    };
    let identity = if request.openid {
        "<p>It will also learn who you are in this account.</p>"
    } else {
        ""
    };
    let main = format!(
        "<h1><span id=\"agent\">{agent}</span> wants to act for you</h1>{description}{publisher}\
         <p>Signed in as <strong>{who}</strong>.</p>\
         <p>If you allow it, you are sent back to <span class=\"host\" id=\"redirect-host\">{host}</span>.</p>\
         <form method=\"post\" action=\"{base}/oauth/{account}/authorize\">\
         <input type=\"hidden\" name=\"consent\" value=\"{token}\">\
         <fieldset><legend>What it may do</legend>{scopes}</fieldset>{tools}{identity}\
         <p class=\"muted\">Uncheck anything you do not want to allow. You can withdraw this \
         consent at any time on <a href=\"{base}/oauth/{account}/consents\">your consents page</a>.</p>\
         <button type=\"submit\" name=\"decision\" value=\"approve\" class=\"primary\" id=\"approve\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button>\
         </form>",
        agent = escape(&view.agent_name),
        who = escape(who),
        host = escape(&view.redirect_host),
        base = escape(&state.public_base),
        account = request.account_id,
        token = escape(&token),
        scopes = checkboxes("scope", &view.items.scopes),
    );
    page(
        StatusCode::OK,
        &format!("Allow {}?", view.agent_name),
        &main,
    )
}

async fn issue_code(
    state: &ApiState,
    request: &AuthorizationRequest,
    principal: PrincipalId,
    grant: &Delegation,
    auth_time: DateTime<Utc>,
) -> HttpResponse {
    match state
        .app
        .oauth
        .authorizations
        .issue_code(request, principal, grant, auth_time)
        .await
    {
        Ok(code) => redirect_to(state, &request.return_to(), &[("code", &code)]),
        Err(error) => refused(state, Some(&request.return_to()), error),
    }
}

/// Whether a form came from our own pages: an `Origin`, when the browser sends one, must
/// be this server's.
fn same_origin(state: &ApiState, http: &HttpRequest) -> bool {
    let Some(origin) = http.headers().get(header::ORIGIN) else {
        return true;
    };
    let ours = url::Url::parse(&state.public_base)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_default();
    crate::headers::text(origin).is_some_and(|origin| origin == ours)
}

fn forged() -> HttpResponse {
    error_page(
        StatusCode::FORBIDDEN,
        "invalid_form",
        "This form expired, was not sent from this server's page, or belongs to another sign-in. Start again from the application.",
    )
}

/// `POST /oauth/{account_id}/authorize`: the consent page's answer.
async fn decide(
    state: Data<ApiState>,
    account_id: Path<String>,
    http: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let account = match existing_account(&state, &account_id).await {
        Ok(account) => account,
        Err(page) => return page,
    };
    let Some(form) = pairs(&body) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The form is too long.",
        );
    };
    let person = signed_in(&state, &http);
    let sealed: Option<ConsentForm> = single(&form, "consent")
        .ok()
        .flatten()
        .and_then(|text| state.sealer.open(Purpose::ConsentForm, text, Utc::now()));
    let (Some(person), Some(consent)) = (person, sealed) else {
        return forged();
    };
    if !same_origin(&state, &http)
        || consent.subject != person.subject
        || consent.request.account_id != account
    {
        return forged();
    }
    let request = &consent.request;
    match single(&form, "decision") {
        Ok(Some("approve")) => {}
        Ok(Some("deny")) => {
            return redirect_to(
                &state,
                &request.return_to(),
                &[
                    ("error", authorize_errors::ACCESS_DENIED),
                    ("error_description", "the user denied the request"),
                ],
            );
        }
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Choose Allow or Deny.",
            );
        }
    }
    let authorizations = &state.app.oauth.authorizations;
    let scopes: BTreeSet<String> = all(&form, "scope").into_iter().collect();
    let grant = authorizations
        .approve(
            request,
            consent.principal,
            scopes,
            all(&form, "tool").into_iter().collect(),
        )
        .await;
    match grant {
        Ok(grant) => issue_code(&state, request, consent.principal, &grant, person.auth_time).await,
        Err(error) => refused(&state, Some(&request.return_to()), error),
    }
}

/// `GET /oauth/{account_id}/consents`: the signed-in person's consents in the account.
async fn consents(
    state: Data<ApiState>,
    account_id: Path<String>,
    http: HttpRequest,
) -> HttpResponse {
    let account = match existing_account(&state, &account_id).await {
        Ok(account) => account,
        Err(page) => return page,
    };
    let Some(person) = signed_in(&state, &http) else {
        return start_sign_in(&state, Next::Consents { account }, None).await;
    };
    let authorizations = &state.app.oauth.authorizations;
    let principal = match principal_or_page(&state, account, &person).await {
        Ok(principal) => principal,
        Err(page) => return page,
    };
    let listed = match authorizations.consents(account, principal.id).await {
        Ok(listed) => listed,
        Err(error) => return refused(&state, None, error),
    };
    let form = ConsentsForm {
        account,
        subject: person.subject.clone(),
    };
    let Some(token) = state
        .sealer
        .seal(Purpose::ConsentsForm, &form, later(STEP_MINUTES))
    else {
        return unavailable("The server cannot show your consents now.");
    };
    let items: String = listed
        .iter()
        .map(|(grant, agent)| {
            let name = agent
                .as_ref()
                .map_or("a deleted agent", |a| a.spec.name.as_str());
            let scopes: Vec<&str> = grant.scopes.iter().map(String::as_str).collect();
            format!(
                "<li><strong>{name}</strong> may use <code>{scopes}</code> until {until}.\
                 <form method=\"post\" action=\"{base}/oauth/{account}/consents/{id}/withdraw\">\
                 <input type=\"hidden\" name=\"form\" value=\"{token}\">\
                 <button type=\"submit\" id=\"withdraw-{id}\">Withdraw</button></form></li>",
                name = escape(name),
                scopes = escape(&scopes.join(" ")),
                until = grant.expires_at.format("%Y-%m-%d %H:%M UTC"),
                base = escape(&state.public_base),
                id = grant.id,
                token = escape(&token),
            )
        })
        .collect();
    let main = if items.is_empty() {
        "<h1>Your consents</h1><p id=\"none\">You have not allowed any agent to act for you.</p>"
            .to_owned()
    } else {
        format!(
            "<h1>Your consents</h1><p>Withdrawing one stops the agent, and every token it \
             holds for you, at once.</p><ul>{items}</ul>"
        )
    };
    page(StatusCode::OK, "Your consents", &main)
}

/// `POST /oauth/{account_id}/consents/{delegation_id}/withdraw`
async fn withdraw(
    state: Data<ApiState>,
    path: Path<(String, String)>,
    http: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let (account_id, delegation_id) = path.into_inner();
    let account = match existing_account(&state, &account_id).await {
        Ok(account) => account,
        Err(page) => return page,
    };
    let person = signed_in(&state, &http);
    let form: Option<ConsentsForm> = pairs(&body)
        .and_then(|form| single(&form, "form").ok().flatten().map(str::to_owned))
        .and_then(|text| state.sealer.open(Purpose::ConsentsForm, &text, Utc::now()));
    let (Some(person), Some(form)) = (person, form) else {
        return forged();
    };
    if !same_origin(&state, &http) || form.subject != person.subject || form.account != account {
        return forged();
    }
    let Ok(id) = delegation_id.parse::<DelegationId>() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "consent_not_found",
            "You gave no such consent.",
        );
    };
    let authorizations = &state.app.oauth.authorizations;
    let principal = match principal_or_page(&state, account, &person).await {
        Ok(principal) => principal,
        Err(page) => return page,
    };
    match authorizations.withdraw(account, principal.id, id).await {
        Ok(true) => see_other(&format!("{}/oauth/{account}/consents", state.public_base)),
        Ok(false) => error_page(
            StatusCode::NOT_FOUND,
            "consent_not_found",
            "You gave no such consent.",
        ),
        Err(error) => refused(&state, None, error),
    }
}
