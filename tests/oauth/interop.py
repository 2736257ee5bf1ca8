"""An account's authorization server driven by authlib through discovery only, its access
tokens verified by PyJWT with nothing but the jwks_uri (a resource server's view)."""

import os
import sys

import json

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

API = os.environ["D2_API_URL"]
ADMIN = {"Authorization": f"Bearer {os.environ['D2_INTEROP_ADMIN_TOKEN']}"}
RESOURCE = "https://tools.example/"


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def key_pair():
    """A new RSA key: its private PEM (what the agent signs with) and its public JWK."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return pem, public


def agent(method):
    """Registers and activates an agent authenticating by `method`: its client id and
    what it authenticates with (its secret, or for private_key_jwt its private key)."""
    spec = {
        "name": f"interop {method}",
        "scopes": ["tools:read", "tools:execute"],
        "resources": [RESOURCE],
        "auth_method": method,
    }
    private_key = None
    if method == "private_key_jwt":
        private_key, public = key_pair()
        spec["jwks"] = {"keys": [public]}
    registered = requests.post(f"{API}/v1/agents/register", json=spec, headers=ADMIN)
    check(registered.status_code == 201, f"register: {registered.text}")
    token = registered.json()["registration_token"]
    activated = requests.post(f"{API}/v1/agents/activate", json={"registration_token": token})
    check(activated.status_code == 200, f"activate: {activated.text}")
    body = activated.json()
    return body["client_id"], private_key or body["client_secret"]


def session_of(method, client_id, credential, token_endpoint, **options):
    """An authlib session authenticating as `method` does."""
    if method == "private_key_jwt":
        # authlib authenticates revocation and introspection by HTTP Basic unless told.
        options["revocation_endpoint_auth_method"] = method
    session = OAuth2Session(
        client_id, credential, token_endpoint_auth_method=method, **options
    )
    if method == "private_key_jwt":
        session.register_client_auth_method(PrivateKeyJWT(token_endpoint))
    return session


def main():
    account = requests.get(f"{API}/v1/accounts/me", headers=ADMIN).json()["account_id"]
    issuer = f"{API}/oauth/{account}"
    # Discovery: both documents, the RFC 8414 one with the issuer's path inserted.
    metadata = requests.get(f"{API}/.well-known/oauth-authorization-server/oauth/{account}").json()
    openid = requests.get(f"{issuer}/.well-known/openid-configuration").json()
    check(metadata["issuer"] == issuer == openid["issuer"], f"issuer: {metadata}")
    for key in ("token_endpoint", "introspection_endpoint", "revocation_endpoint", "jwks_uri"):
        check(metadata[key].startswith(issuer), f"{key}: {metadata[key]}")
    jwks = jwt.PyJWKClient(metadata["jwks_uri"])

    methods = metadata["token_endpoint_auth_methods_supported"]
    check(
        set(methods) == {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"},
        f"auth methods: {methods}",
    )
    # `none` is for public clients, which get tokens by the code flow only (see
    # tests/mcp): these agents authenticate.
    for method in sorted(set(methods) - {"none"}):
        client_id, credential = agent(method)
        session = session_of(
            method, client_id, credential, metadata["token_endpoint"], scope="tools:read"
        )
        token = session.fetch_token(
            metadata["token_endpoint"],
            grant_type="client_credentials",
            resource=RESOURCE,
            task_id=f"interop-{method}",
        )
        check(token["token_type"].lower() == "bearer", f"{method}: {token}")
        check(token["scope"] == "tools:read", f"{method}: scope {token}")
        access = token["access_token"]

        # The resource server: nothing but the jwks_uri.
        header = jwt.get_unverified_header(access)
        check(header["typ"] == "at+jwt", f"{method}: typ {header}")
        key = jwks.get_signing_key_from_jwt(access)
        claims = jwt.decode(
            access,
            key.key,
            algorithms=["RS256"],
            audience=RESOURCE,
            issuer=issuer,
            options={"require": ["exp", "iat", "jti", "sub", "client_id", "scope"]},
        )
        check(claims["client_id"] == client_id == claims["sub"], f"{method}: {claims}")
        check(claims["task_id"] == f"interop-{method}", f"{method}: {claims}")
        try:
            jwt.decode(access, key.key, algorithms=["RS256"], audience="https://other.example/")
            check(False, f"{method}: a token for another audience was accepted")
        except jwt.InvalidAudienceError:
            pass

        # Introspection, then refresh (rotated), then revocation of the new refresh token.
        introspected = session.introspect_token(metadata["introspection_endpoint"], token=access)
        check(introspected.status_code == 200, f"{method}: introspect {introspected.text}")
        check(introspected.json()["active"] is True, f"{method}: {introspected.text}")
        check(introspected.json()["task_id"] == f"interop-{method}", introspected.text)
        refreshed = session.refresh_token(
            metadata["token_endpoint"], refresh_token=token["refresh_token"]
        )
        check(refreshed["refresh_token"] != token["refresh_token"], f"{method}: not rotated")
        check(
            jwt.decode(
                refreshed["access_token"],
                jwks.get_signing_key_from_jwt(refreshed["access_token"]).key,
                algorithms=["RS256"],
                audience=RESOURCE,
                issuer=issuer,
            )["task_id"]
            == f"interop-{method}",
            f"{method}: a refresh keeps its task",
        )
        revoked = session.revoke_token(
            metadata["revocation_endpoint"],
            token=refreshed["refresh_token"],
            token_type_hint="refresh_token",
        )
        check(revoked.status_code == 200, f"{method}: revoke {revoked.text}")
        for old in (refreshed["access_token"], refreshed["refresh_token"]):
            answer = session.introspect_token(metadata["introspection_endpoint"], token=old)
            after = answer.json()
            check(
                after.get("active") is False and after.get("revoked_by") == "client",
                f"{method}: after revoke {answer.text}",
            )

        # A wrong secret, or a key the agent did not register, is an RFC 6749 invalid_client.
        wrong_credential = key_pair()[0] if method == "private_key_jwt" else credential + "x"
        wrong = session_of(method, client_id, wrong_credential, metadata["token_endpoint"])
        try:
            wrong.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
            check(False, f"{method}: a wrong credential got a token")
        except Exception as error:  # authlib raises OAuthError subclasses
            check("invalid_client" in str(error), f"{method}: {error!r}")
        print(f"oauth-interop: {method}: discover, token, verify, introspect, refresh, revoke: ok")


main()
