"""The MCP server of the interoperability test: the SDK's own server (streamable HTTP) with
one tool, protected by the SDK's resource-server auth. It publishes RFC 9728 protected
resource metadata naming D2's issuer, and checks every bearer token at D2's introspection
endpoint (RFC 7662) as a confidential agent registered for it."""

import threading
import time
from contextlib import contextmanager

import httpx2
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

SCOPE = "tools:read"


class Introspection:
    """A TokenVerifier asking D2 about each token: active, and issued for this server (its
    `aud` names `resource`). Nothing is cached, so a revocation counts at the next call.
    Every answer is kept in `answers`, for the test to see what the server was told."""

    def __init__(self, introspection_endpoint, client_id, client_secret, resource):
        self.endpoint = introspection_endpoint
        self.credentials = (client_id, client_secret)
        self.resource = resource
        self.answers = []

    async def verify_token(self, token):
        async with httpx2.AsyncClient(timeout=10) as http:
            response = await http.post(self.endpoint, data={"token": token}, auth=self.credentials)
        # D2 failing to answer is no answer about the token: let the request fail loudly.
        response.raise_for_status()
        claims = response.json()
        self.answers.append(claims)
        audience = claims.get("aud")
        audience = [audience] if isinstance(audience, str) else audience or []
        if claims.get("active") is not True or self.resource not in audience:
            return None
        return AccessToken(
            token=token,
            client_id=claims["client_id"],
            scopes=claims.get("scope", "").split(),
            expires_at=claims.get("exp"),
            resource=self.resource,
            subject=claims.get("sub"),
            claims=claims,
        )


def app(resource, issuer, verifier):
    """The ASGI app of an MCP server at `resource` (an http://127.0.0.1:PORT/mcp URL)."""
    server = MCPServer(
        "d2-interop",
        token_verifier=verifier,
        log_level="WARNING",
        auth=AuthSettings(
            issuer_url=issuer,
            resource_server_url=resource,
            required_scopes=[SCOPE],
            # The verifier checks `aud` itself; the SDK checks the resource it reports too.
            validate_token_resource=True,
        ),
    )

    @server.tool()
    def whoami() -> str:
        """Whom the caller acts for, and which client it is."""
        token = get_access_token()
        return f"{token.subject} via {token.client_id}"

    # Stateless, JSON answers: every call is one POST, authenticated on its own.
    return server.streamable_http_app(stateless_http=True, json_response=True)


@contextmanager
def serving(asgi_app, sock):
    """Serves `asgi_app` on the listening socket `sock` until the block ends, in a thread
    of its own: the test's failures do not cut the server short, it stops in order."""
    server = uvicorn.Server(uvicorn.Config(asgi_app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the MCP server did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
