"""The flask-seed target: the two Flask services the seeds describe, written from their text.

- Phase 3 activation, as phase3-activation-audit.txt certifies it: the canonical lock helper
  (harbor_common/locks.py), SELECT ... FOR UPDATE on qbo_connections inside the advisory lock,
  INSERT ... ON CONFLICT (workspace_id) DO NOTHING RETURNING id, "Commit on Success, Teardown on
  Error" (no rollback: the request teardown closes the connection), and its auth posture (identity
  is the infrastructure's job: the route checks no token and no membership, §3.3 and §7.2).
  Disconnect and revoke do not exist (§7.1).
- The connector flow, as connector-isolation-threat-model.txt's "proposed solution architecture"
  writes it: @require_auth sets g.tenant_id from the JWT; OAuth state in Redis with a 10-minute
  TTL, checked against the caller's tenant, deleted after a successful callback; tokens encrypted
  before they are stored; queries filtered by tenant.

SEED_MODE=v1 is the design before the remediations: the split lock namespace and no row lock
(audit §1), the in-memory oauth_states dict popped by the callback with no tenant check, and
plaintext tokens (threat model, "current architecture").
"""
import base64
import datetime
import json
import os
import secrets
import urllib.parse

import jwt
import psycopg
import redis
import requests
from cryptography.fernet import Fernet
from flask import Flask, g, jsonify, request

from harbor_common.locks import MODE, lock_workspace
from sync_points import reach, sync

app = Flask(__name__)
DATABASE_URL = os.environ["DATABASE_URL"]
JWKS = {k["kid"]: jwt.PyJWK(k) for k in json.loads(os.environ["JWT_JWKS"])["keys"]}
ISSUER, AUDIENCE = os.environ["JWT_ISSUER"], os.environ["JWT_AUDIENCE"]
with open(os.environ["PROVIDERS_FILE"]) as f:
    PROVIDERS = json.load(f)
if os.environ.get("SYNC_POINTS") == "true":
    app.register_blueprint(sync)
else:
    def reach(point):  # noqa: F811 — without the test switch, points are no-ops
        return None

if MODE == "v2":
    REDIS = redis.Redis.from_url(os.environ["REDIS_URL"])
    REDIS_PREFIX = os.environ["REDIS_PREFIX"]
    # "encrypt(tokens[...])": the threat model names no scheme; Fernet (AES + HMAC) with the key
    # the deployment provides.
    _key = base64.b64decode(os.environ["TOKEN_KEYS"].split(",")[0].split(":", 1)[1])
    FERNET = Fernet(base64.urlsafe_b64encode(_key[:32]))
else:
    oauth_states = {}  # "oauth_states = {} (In-Memory Dictionary)": no expiration, no cleanup


class HarborError(Exception):
    def __init__(self, status, code, message=""):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@app.errorhandler(HarborError)
def harbor_error(e):
    return jsonify(error=e.code, message=e.message), e.status


def db():
    """One connection per request, its transactions named after the harness's actor tag."""
    if "db" not in g:
        actor = request.headers.get("x-harbor-actor")
        g.db = psycopg.connect(DATABASE_URL, application_name=f"harbor:{actor}" if actor else "flask-seed")
    return g.db


@app.teardown_request
def teardown(_exc):
    # "Teardown on Error": the connection closes, and with it the transaction and its locks.
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def require_auth(view):
    def wrapped(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise HarborError(401, "AUTH_REQUIRED", "no bearer token")
        token = header[len("Bearer "):]
        try:
            key = JWKS[jwt.get_unverified_header(token).get("kid")]
            claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
        except (jwt.PyJWTError, KeyError) as e:
            raise HarborError(401, "AUTH_REQUIRED", str(e))
        cur = db().cursor()
        cur.execute("SELECT tenant_id FROM users WHERE id = %s", (claims["sub"],))
        row = cur.fetchone()
        if row is None:
            raise HarborError(401, "AUTH_REQUIRED", "unknown user")
        g.user_id, g.tenant_id = claims["sub"], str(row[0])
        return view(*args, **kwargs)
    wrapped.__name__ = view.__name__
    return wrapped


def own_workspace(cur, workspace_id):
    """Connector queries filter by g.tenant_id (the threat model's positive controls)."""
    cur.execute("SELECT 1 FROM workspaces WHERE id = %s AND tenant_id = %s", (workspace_id, g.tenant_id))
    if cur.fetchone() is None:
        raise HarborError(404, "NOT_FOUND", "no such workspace")


@app.get("/readyz")
def readyz():
    return jsonify(status="ready", mode=MODE, version=f"flask-seed {MODE}")


# ---- Phase 3: activation --------------------------------------------------------------------

@app.post("/api/workspaces/<workspace_id>/activate")
def activate(workspace_id):
    cur = db().cursor()
    lock_workspace(cur, workspace_id, "activation")
    reach("activation.locked")
    cur.execute("SELECT active FROM entitlements WHERE workspace_id = %s", (workspace_id,))
    row = cur.fetchone()
    if row is None or not row[0]:
        raise HarborError(409, "ACTIVATION_NOT_ENTITLED", "the workspace is not entitled")
    row_lock = " FOR UPDATE" if MODE == "v2" else ""
    cur.execute("SELECT status FROM qbo_connections WHERE workspace_id = %s" + row_lock, (workspace_id,))
    row = cur.fetchone()
    reach("activation.status_read")
    if row is None or row[0] != "CONNECTED":
        reach("activation.failing")
        raise HarborError(409, "ACTIVATION_NOT_READY", "QuickBooks is not connected")
    cur.execute(
        "INSERT INTO workspace_activations (workspace_id, activated_at) VALUES (%s, NOW()) "
        "ON CONFLICT (workspace_id) DO NOTHING RETURNING id", (workspace_id,))
    inserted = cur.fetchone()
    reach("activation.before_commit")
    db().commit()
    return jsonify(workspace_id=workspace_id, already_completed=inserted is None)


# ---- Phase 2: connectors over OAuth ---------------------------------------------------------

def provider_config(provider):
    if provider not in PROVIDERS:
        raise HarborError(404, "NOT_FOUND", "unknown provider")
    return PROVIDERS[provider]


def seal(value):
    if value is None or MODE == "v1":
        return value  # v1: "PLAINTEXT" (CWE-312)
    return FERNET.encrypt(value.encode()).decode()


def unseal(value):
    if value is None or MODE == "v1":
        return value
    return FERNET.decrypt(value.encode()).decode()


def token_request(provider, form):
    """The provider's token endpoint, its client authentication the provider's way."""
    p = provider_config(provider)
    auth = None
    if provider == "box":
        form = dict(form, client_id=p["client_id"], client_secret=p["client_secret"])
    else:  # HTTP Basic, each half form-encoded first (RFC 6749 §2.3.1)
        auth = (urllib.parse.quote_plus(p["client_id"]), urllib.parse.quote_plus(p["client_secret"]))
    try:
        r = requests.post(p["token_url"], data=form, auth=auth, timeout=10)
        body = r.json()
    except (requests.RequestException, ValueError) as e:
        raise HarborError(502, "PROVIDER_ERROR", f"token endpoint: {type(e).__name__}")
    if r.status_code != 200 or body.get("ok") is False or "access_token" not in body:
        raise HarborError(502, "PROVIDER_ERROR", f"token endpoint refused: {body.get('error')}")
    return body


@app.post("/api/integrations/<provider>/authorize")
@require_auth
def authorize(provider):
    p = provider_config(provider)
    workspace_id = request.args.get("workspace_id", "")
    cur = db().cursor()
    own_workspace(cur, workspace_id)
    state = secrets.token_urlsafe(24)
    data = {"tenant_id": g.tenant_id, "user_id": g.user_id, "workspace_id": workspace_id, "type": provider}
    if MODE == "v2":
        REDIS.setex(f"{REDIS_PREFIX}oauth_state:{state}", 600, json.dumps(data))
    else:
        oauth_states[state] = data
    if provider == "qbo":
        lock_workspace(cur, workspace_id, "oauth")
        reach("oauth.authorize.locked")
        cur.execute("UPDATE qbo_connections SET status = 'PENDING' WHERE workspace_id = %s AND status <> 'CONNECTED'",
                    (workspace_id,))
    db().commit()
    # The providers' own spellings (the seeds do not give them): Slack's scopes are comma-separated,
    # and Google issues a refresh token only to an offline request.
    params = {"response_type": "code", "client_id": p["client_id"], "redirect_uri": p["redirect_uri"],
              "scope": ("," if provider == "slack" else " ").join(p["scopes"]), "state": state}
    if provider == "gmail":
        params.update(access_type="offline", prompt="consent")
    query = urllib.parse.urlencode(params)
    return jsonify(status="PENDING", auth_url=f"{p['authorize_url']}?{query}")


@app.get("/api/integrations/<provider>/callback")
@require_auth
def callback(provider):
    p = provider_config(provider)
    state = request.args.get("state", "")
    if MODE == "v2":
        raw = REDIS.get(f"{REDIS_PREFIX}oauth_state:{state}")
        state_data = json.loads(raw) if raw else None
    else:
        state_data = oauth_states.pop(state, None)
    reach("oauth.callback.state_consumed")
    if not state_data or state_data["type"] != provider:
        raise HarborError(400, "STATE_INVALID", "unknown or expired state")
    if MODE == "v2" and state_data["tenant_id"] != g.tenant_id:
        raise HarborError(403, "STATE_TENANT_MISMATCH", "CSRF attempt caught")
    if "code" not in request.args:
        raise HarborError(400, "STATE_INVALID", request.args.get("error", "no code"))
    tokens = token_request(provider, {"grant_type": "authorization_code", "code": request.args["code"],
                                      "redirect_uri": p["redirect_uri"]})
    reach("oauth.callback.exchanged")
    workspace_id = state_data["workspace_id"]
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=int(tokens.get("expires_in", 3600)))
    cur = db().cursor()
    lock_workspace(cur, workspace_id, "oauth")
    reach("oauth.callback.locked")
    cur.execute(
        "INSERT INTO connectors (tenant_id, workspace_id, type, access_token, refresh_token, expires_at, realm_id) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (workspace_id, type) DO UPDATE SET "
        "access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token, "
        "expires_at = EXCLUDED.expires_at, realm_id = EXCLUDED.realm_id",
        (state_data["tenant_id"], workspace_id, provider, seal(tokens["access_token"]),
         seal(tokens.get("refresh_token")), expires, request.args.get("realmId")))
    if provider == "qbo":
        cur.execute("UPDATE qbo_connections SET status = 'CONNECTED' WHERE workspace_id = %s", (workspace_id,))
    reach("oauth.callback.before_commit")
    db().commit()
    if MODE == "v2":
        REDIS.delete(f"{REDIS_PREFIX}oauth_state:{state}")  # "✓ NEW: redis.delete" after the store
    return jsonify(status="CONNECTED")


def fetch_documents(provider, access, connector):
    """The provider's document list, its own API and paging."""
    base = provider_config(provider)["resource_url"]
    headers = {"Authorization": f"Bearer {access}"}
    out, cursor = [], None
    while True:
        if provider == "qbo":
            q = f"select * from Attachable startposition {len(out) + 1} maxresults 1000"
            body = requests.get(f"{base}/v3/company/{connector['realm_id']}/query", params={"query": q},
                                headers=headers, timeout=10).json()
            rows = [(a["Id"], a["FileName"]) for a in body.get("QueryResponse", {}).get("Attachable", [])]
            more = bool(rows)
        elif provider == "gmail":
            params = {"maxResults": 500, **({"pageToken": cursor} if cursor else {})}
            body = requests.get(f"{base}/gmail/v1/users/me/threads", params=params, headers=headers, timeout=10).json()
            rows = [(t["id"], t["snippet"]) for t in body.get("threads", [])]
            cursor = body.get("nextPageToken")
            more = bool(cursor)
        elif provider == "slack":
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            body = requests.get(f"{base}/conversations.list", params=params, headers=headers, timeout=10).json()
            if not body.get("ok"):
                raise HarborError(502, "PROVIDER_ERROR", body.get("error", "slack refused"))
            rows = [(c["id"], c["name"]) for c in body.get("channels", [])]
            cursor = body.get("response_metadata", {}).get("next_cursor")
            more = bool(cursor)
        else:
            body = requests.get(f"{base}/2.0/folders/0/items", params={"limit": 1000, "offset": len(out)},
                                headers=headers, timeout=10).json()
            rows = [(e["id"], e["name"]) for e in body.get("entries", [])]
            more = bool(rows) and len(out) + len(rows) < body.get("total_count", 0)
        if "error" in body or "fault" in body or "Fault" in body:
            raise HarborError(502, "PROVIDER_ERROR", "the provider refused the token")
        out.extend(rows)
        if not more:
            return out


@app.post("/api/integrations/<provider>/sync")
@require_auth
def sync_documents(provider):
    workspace_id = request.args.get("workspace_id", "")
    cur = db().cursor()
    own_workspace(cur, workspace_id)
    cur.execute("SELECT id, access_token, refresh_token, expires_at, realm_id FROM connectors "
                "WHERE workspace_id = %s AND type = %s AND tenant_id = %s", (workspace_id, provider, g.tenant_id))
    row = cur.fetchone()
    if row is None or row[1] is None:
        raise HarborError(409, "NOT_CONNECTED", "connect first")
    connector = {"id": row[0], "realm_id": row[4]}
    access, refreshed = unseal(row[1]), False
    if row[3] is not None and row[3] <= datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5):
        tokens = token_request(provider, {"grant_type": "refresh_token", "refresh_token": unseal(row[2])})
        access, refreshed = tokens["access_token"], True
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=int(tokens.get("expires_in", 3600)))
        cur.execute("UPDATE connectors SET access_token = %s, refresh_token = %s, expires_at = %s WHERE id = %s",
                    (seal(access), seal(tokens.get("refresh_token") or unseal(row[2])), expires, row[0]))
        reach("sync.refreshed")
    reach("sync.before_fetch")
    documents = fetch_documents(provider, access, connector)
    for external_id, content in documents:
        cur.execute("INSERT INTO documents (tenant_id, connector_id, external_id, content) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (connector_id, external_id) DO UPDATE SET content = EXCLUDED.content",
                    (g.tenant_id, row[0], external_id, content))
    db().commit()
    return jsonify(refreshed=refreshed, documents_synced=len(documents))


@app.get("/api/workspaces/<workspace_id>/connectors")
@require_auth
def list_connectors(workspace_id):
    cur = db().cursor()
    own_workspace(cur, workspace_id)
    cur.execute("SELECT type, access_token IS NOT NULL, refresh_token IS NOT NULL FROM connectors "
                "WHERE workspace_id = %s AND tenant_id = %s", (workspace_id, g.tenant_id))
    rows = cur.fetchall()
    has_token = {t: access for t, access, _ in rows}
    has_refresh = {t: refresh for t, _, refresh in rows}
    cur.execute("SELECT status FROM qbo_connections WHERE workspace_id = %s", (workspace_id,))
    row = cur.fetchone()
    qbo = row[0] if row else "NOT_CONNECTED"
    # "to_dict(include_tokens=False) only shows boolean existence"
    return jsonify(connections=[
        {"provider": p, "connected": bool(has_token.get(p)), "has_refresh_token": bool(has_refresh.get(p)),
         "status": qbo if p == "qbo" else ("CONNECTED" if has_token.get(p) else "NOT_CONNECTED")}
        for p in sorted(PROVIDERS)])


@app.get("/api/workspaces/<workspace_id>/documents")
@require_auth
def list_documents(workspace_id):
    cur = db().cursor()
    own_workspace(cur, workspace_id)
    cur.execute("SELECT d.external_id, d.content FROM documents d JOIN connectors c ON c.id = d.connector_id "
                "WHERE c.workspace_id = %s AND d.tenant_id = %s", (workspace_id, g.tenant_id))
    return jsonify(documents=[{"id": i, "content": c} for i, c in cur.fetchall()])


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]), threaded=True)
