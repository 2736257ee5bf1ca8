"""Drives the unmodified D2 Python SDK (d2-sdk 1.2.2) against a running D2 server.

Run by scripts/sdk-interop.sh, which starts the server and passes, in the environment:
D2_API_URL, D2_INTEROP_ADMIN_TOKEN, D2_INTEROP_DEV_TOKEN, D2_INTEROP_SERVER_TOKEN,
D2_INTEROP_ACCOUNT_ID, D2_INTEROP_APP and D2_INTEROP_WORKDIR. Every check asserts on what
the server recorded or served, not only on what the SDK returned.
"""

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request

API = os.environ["D2_API_URL"]
ADMIN = os.environ["D2_INTEROP_ADMIN_TOKEN"]
DEV = os.environ["D2_INTEROP_DEV_TOKEN"]
SERVER = os.environ["D2_INTEROP_SERVER_TOKEN"]
ACCOUNT = os.environ["D2_INTEROP_ACCOUNT_ID"]
APP = os.environ["D2_INTEROP_APP"]
WORK = pathlib.Path(os.environ["D2_INTEROP_WORKDIR"])
POLICY_FILE = WORK / "policy.yaml"


def step(message):
    print(f"interop: {message}", flush=True)


def http(method, path, token=None, body=None):
    request = urllib.request.Request(API + path, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data=data, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def write_policy(tools, denied):
    """Analysts get `tools`; `denied` tools exist in the policy but only for admins."""
    permissions = "".join(f"      - {tool}\n" for tool in tools)
    permissions += "".join(f"      - tool: {tool}\n        allow: false\n" for tool in denied)
    admin = "".join(f"      - {tool}\n" for tool in denied)
    POLICY_FILE.write_text(
        f"metadata:\n  name: {APP}\n  description: interop\n"
        f"policies:\n  - role: analyst\n    permissions:\n{permissions}"
        f"  - role: admin\n    permissions:\n{admin}"
    )


def cli(*args):
    """Runs the SDK's `d2` CLI as a user would, with a fresh HOME."""
    env = dict(os.environ)
    env.update(
        HOME=str(WORK / "cli-home"),
        D2_TOKEN=DEV,
        D2_POLICY_FILE=str(POLICY_FILE),
        D2_TELEMETRY="off",
        D2_SILENT="1",
    )
    result = subprocess.run([sys.executable, "-m", "d2", *args], env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"`d2 {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def published_versions():
    status, _, body = http("GET", f"/v1/policy/versions?app_name={APP}", ADMIN)
    assert status == 200, (status, body)
    return [v for v in json.loads(body) if v["stage"] == "published"]


def audit(action):
    status, _, body = http("GET", f"/v1/audit?action={action}&limit=1000", ADMIN)
    assert status == 200, (status, body)
    return json.loads(body)


def current_bundle():
    status, headers, body = http("GET", f"/v1/policy/bundle?app_name={APP}", ADMIN)
    assert status == 200, (status, body)
    return json.loads(body)


def verify_independently():
    """Verifies the served JWS with jwcrypto, using nothing but the JWKS document."""
    from jwcrypto import jwk, jws

    bundle = current_bundle()
    status, _, body = http("GET", f"/.well-known/jwks.json?account_id={ACCOUNT}")
    assert status == 200, (status, body)
    keys = jwk.JWKSet.from_json(body.decode())
    token = jws.JWS()
    token.deserialize(bundle["jws"])
    kid = token.jose_header["kid"]
    token.verify(keys.get_key(kid), alg="RS256")
    claims = json.loads(token.payload)
    assert claims["aud"] == f"d2-policy:{ACCOUNT}:{APP}", claims["aud"]
    assert claims["iss"] == "d2-policy-service"
    assert claims["iat"] <= time.time(), "iat must not be in the future"
    assert claims["exp"] > time.time() + 86_400
    assert claims["metadata"]["name"] == APP and claims["policies"]
    return kid


def publish_and_draft():
    write_policy(["reports.read"], ["reports.delete"])
    before = len(published_versions())
    cli("draft")
    cli("publish")
    cli("publish")  # republishing the same app must succeed (If-Match: *)
    versions = published_versions()
    assert len(versions) == before + 2, versions
    records = audit("policy.publish")
    assert records and all(r["metadata"]["signature_verified"] for r in records)
    assert records[0]["metadata"]["key_id"].startswith("ed_")
    keys = json.loads(http("GET", "/v1/keys", ADMIN)[2])
    assert [k["key_id"] for k in keys] == [records[0]["metadata"]["key_id"]], keys
    step(f"d2 draft + d2 publish twice: versions {[v['version'] for v in versions]}, key {keys[0]['key_id']}")


async def runtime():
    os.environ.update(
        HOME=str(WORK / "runtime-home"),
        D2_TOKEN=SERVER,
        D2_POLICY_FILE=str(POLICY_FILE),
        # Usage telemetry goes to /v1/events/ingest, and is read back at the end.
        D2_TELEMETRY="usage",
        D2_SILENT="1",
    )
    import d2
    from d2.exceptions import MissingPolicyError, PermissionDeniedError
    from d2.policy import get_policy_manager

    @d2.d2_guard("reports.read")
    async def read_reports():
        return "read"

    @d2.d2_guard("reports.delete")
    async def delete_reports():
        return "deleted"

    @d2.d2_guard("reports.export")
    async def export_reports():
        return "exported"

    await d2.configure_rbac_async()
    d2.set_user("alice", roles=["analyst"])
    manager = get_policy_manager()

    assert await read_reports() == "read"
    for guarded, expected in ((delete_reports, PermissionDeniedError), (export_reports, (MissingPolicyError, PermissionDeniedError))):
        try:
            await guarded()
        except expected:
            pass
        else:
            raise AssertionError(f"{guarded.__name__} should have been refused")
    assert manager._policy_bundle.etag == current_bundle()["etag"]
    step("runtime with a server token: allowed and denied calls follow the policy")

    async def wait_for(condition, what, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"the running SDK did not pick up {what}")

    # Keep clear of the SDK's own poll window (its loader serves its cache until
    # last fetch + X-D2-Poll-Seconds), then publish a new version.
    await asyncio.sleep(5)
    write_policy(["reports.read", "reports.export"], ["reports.delete"])
    cli("publish")
    new_etag = current_bundle()["etag"]
    await wait_for(lambda: manager._policy_bundle.etag == new_etag, "the new version")
    assert await export_reports() == "exported"
    step("a newly published version is picked up by the running SDK")

    await asyncio.sleep(5)
    old_kid = verify_independently()
    status, _, body = http("POST", "/v1/jwks/rotate", ADMIN)
    assert status == 201, (status, body)
    rotated = json.loads(body)
    assert rotated["previous_key_id"] == old_kid
    rotated_etag = current_bundle()["etag"]
    await wait_for(lambda: manager._policy_bundle.etag == rotated_etag, "the re-signed bundle")
    assert await read_reports() == "read"
    new_kid = verify_independently()
    assert new_kid == rotated["new_key_id"] != old_kid
    step("after a signing-key rotation the SDK verifies the re-signed bundle (JWKS refreshed)")

    await asyncio.sleep(5)
    status, _, body = http("POST", f"/v1/policy/revoke?app_name={APP}", ADMIN)
    assert status == 202, (status, body)
    manager._policy_loader._cache.save_polling_state(0)
    try:
        await manager._policy_loader.load_policy()
    except Exception as error:
        assert "410" in str(error), error
    else:
        raise AssertionError("the SDK should see 410 after a revoke")
    # The SDK keeps enforcing its last good policy, as documented.
    assert await read_reports() == "read"
    step("after a revoke the SDK sees 410")
    await d2.shutdown_all_rbac()
    telemetry()


def telemetry():
    """What the SDK reported (it flushes at shutdown), read back through the API."""
    status, _, body = http("GET", "/v1/events?limit=1000&event_type=authz_decision", ADMIN)
    assert status == 200, (status, body)
    events = json.loads(body)
    decisions = {(e["payload"].get("tool_id"), e["decision"]) for e in events}
    assert ("reports.read", "allowed") in decisions, decisions
    assert ("reports.delete", "denied") in decisions, decisions
    # The SDK reports service "unknown" in cloud mode; the app comes from the server token.
    assert {e["app_name"] for e in events} == {APP}, {e["app_name"] for e in events}
    assert all(e["payload"].get("host") and e["host"] == e["payload"]["host"] for e in events)
    status, _, body = http("GET", "/v1/metrics/summary", ADMIN)
    assert status == 200, (status, body)
    summary = json.loads(body)
    assert summary["total_authorizations"] == len(events), (summary, len(events))
    denied = sum(1 for e in events if e["decision"] == "denied")
    assert summary["total_denied"] == denied >= 1, summary
    status, _, body = http("GET", "/v1/metrics/top?dimension=tools", ADMIN)
    tools = {item["key"] for item in json.loads(body)["items"]}
    assert {"reports.read", "reports.delete"} <= tools, tools
    status, _, body = http("GET", "/v1/metrics/top?dimension=event_type", ADMIN)
    types = {item["key"] for item in json.loads(body)["items"]}
    step(f"telemetry: {len(events)} authz_decision events ({denied} denied) read back; event types {sorted(types)}")


def main():
    WORK.mkdir(parents=True, exist_ok=True)
    publish_and_draft()
    verify_independently()
    step("the JWS verifies with jwcrypto against the JWKS document alone")
    asyncio.run(runtime())
    step("all checks passed")


if __name__ == "__main__":
    main()
