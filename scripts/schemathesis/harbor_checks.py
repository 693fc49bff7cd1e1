"""Harbor's checks for Schemathesis (loaded with SCHEMATHESIS_HOOKS=harbor_checks).

- error_code_documented: every error body's stable code is one the OpenAPI document lists for that
  operation and status (the document's error responses are generated from service/src/contract.rs,
  so this is the check that the code and the contract have not drifted apart).
- foreign_tenant_learns_nothing: with HARBOR_FOREIGN_WORKSPACE set (the run uses another tenant's
  token), no request to that workspace may succeed or reveal that it exists: only 400 (malformed
  input), 401, 403, 404, 405 or 429 are acceptable.
"""

import os

import schemathesis


def _documented_response(case, status):
    responses = case.operation.definition.raw.get("responses", {})
    return responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")


@schemathesis.check
def error_code_documented(ctx, response, case):
    if response.status_code < 400 or response.status_code == 405:
        return None
    try:
        code = response.json()["error"]["code"]
    except Exception:
        raise AssertionError(f"{response.status_code} without a JSON error body {{error: {{code, message, request_id}}}}")
    documented = _documented_response(case, response.status_code)
    if documented is None:
        raise AssertionError(f"{response.status_code} {code} is not documented for this operation")
    if code not in documented.get("description", ""):
        raise AssertionError(
            f"{response.status_code} {code} is not among the documented codes: {documented.get('description')}"
        )
    return None


@schemathesis.check
def foreign_tenant_learns_nothing(ctx, response, case):
    workspace = os.environ.get("HARBOR_FOREIGN_WORKSPACE")
    if not workspace or workspace not in case.formatted_path:
        return None
    if response.status_code not in (400, 401, 403, 404, 405, 429):
        raise AssertionError(
            f"another tenant's user got {response.status_code} on {case.method} {case.formatted_path}"
        )
    return None
