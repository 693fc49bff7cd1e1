"""Deploys the flask-seed port the way an operator would — its own database, its own keys, its
own process — so that `deployed/target.toml` can certify it as an already-running service.

    .venv/bin/python deployed/deploy.py up   ENV_FILE   # needs HARBOR_DATABASE_URL, HARBOR_REDIS_URL, HARBOR_CERTIFY
    .venv/bin/python deployed/deploy.py down ENV_FILE

`up` makes a database of its own on the server HARBOR_DATABASE_URL names (schema.sql), a signing
key with `harbor-certify keygen --service` (the port trusts its JWK set), starts one replica
(v2, no sync points, providers that answer nothing) and writes ENV_FILE with
FLASK_DEPLOYED_URL, FLASK_DEPLOYED_DATABASE_URL, FLASK_DEPLOYED_SIGNING_KEY and its pid.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
DATABASE = f"flask_seed_deployed_{os.getpid()}"  # one per deployment: a concurrent run keeps its own


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def up(env_file):
    admin = os.environ["HARBOR_DATABASE_URL"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    url = urllib.parse.urlsplit(admin)._replace(path="/" + DATABASE).geturl()
    with psycopg.connect(url, autocommit=True) as conn, open(os.path.join(HERE, "..", "schema.sql")) as f:
        conn.execute(f.read())
    keys = os.path.join(HERE, ".keys")
    subprocess.run([os.environ["HARBOR_CERTIFY"], "keygen", "--service", keys], check=True,
                   stdout=subprocess.DEVNULL)
    service = dict(line.split("=", 1) for line in open(os.path.join(keys, "service.env")).read().split())
    providers = {
        p: {"authorize_url": "http://127.0.0.1:9/authorize", "token_url": "http://127.0.0.1:9/token",
            "resource_url": "http://127.0.0.1:9/resource", "client_id": "deployed", "client_secret": "deployed",
            "redirect_uri": "http://127.0.0.1:9/callback", "scopes": ["offline_access"]}
        for p in ("qbo", "gmail", "slack", "box")
    }
    with open(os.path.join(keys, "providers.json"), "w") as f:
        json.dump(providers, f)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""), "SEED_MODE": "v2", "PORT": str(port), "DATABASE_URL": url,
        "REDIS_URL": os.environ["HARBOR_REDIS_URL"], "REDIS_PREFIX": "flask-deployed:",
        "JWT_JWKS": open(service["HARBOR_JWT_JWKS_FILE"]).read(), "JWT_ISSUER": service["HARBOR_JWT_ISSUER"],
        "JWT_AUDIENCE": service["HARBOR_JWT_AUDIENCE"], "TOKEN_KEYS": service["HARBOR_TOKEN_KEYS"],
        "PROVIDERS_FILE": os.path.join(keys, "providers.json"), "SYNC_POINTS": "false",
    }
    log = open(os.path.join(keys, "replica.log"), "w")
    child = subprocess.Popen([os.path.join(HERE, "..", "start.sh")], env=env, stdout=log, stderr=log,
                             start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if urllib.request.urlopen(base + "/readyz", timeout=1).status == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        child.kill()
        sys.exit(f"the deployed replica did not become ready (see {keys}/replica.log)")
    with open(env_file, "w") as f:
        f.write(f"FLASK_DEPLOYED_URL={base}\nFLASK_DEPLOYED_DATABASE_URL={url}\n"
                f"FLASK_DEPLOYED_SIGNING_KEY={os.path.join(keys, 'gateway.key')}\nFLASK_DEPLOYED_PID={child.pid}\n"
                f"FLASK_DEPLOYED_DATABASE={DATABASE}\n")


def down(env_file):
    """Stops the replica and drops its database (needs HARBOR_DATABASE_URL, as `up` did)."""
    values = dict(line.split("=", 1) for line in open(env_file).read().split())
    try:
        os.killpg(int(values["FLASK_DEPLOYED_PID"]), signal.SIGTERM)
    except ProcessLookupError:
        pass
    with psycopg.connect(os.environ["HARBOR_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {values['FLASK_DEPLOYED_DATABASE']} WITH (FORCE)")


if __name__ == "__main__":
    {"up": up, "down": down}[sys.argv[1]](sys.argv[2])
