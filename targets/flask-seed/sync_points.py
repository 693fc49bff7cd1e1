"""Sync points, protocol 1 (docs/SYNC-POINTS-PROTOCOL.md); test-only: app.py registers it when SYNC_POINTS=true."""
import threading
from flask import Blueprint, jsonify, request
POINTS = ["activation.locked", "activation.status_read", "activation.failing", "activation.before_commit", "oauth.authorize.locked",
          "oauth.callback.state_consumed", "oauth.callback.exchanged", "oauth.callback.locked", "oauth.callback.before_commit",
          "sync.refreshed", "sync.before_fetch"]
_cv, _slots = threading.Condition(), {}  # (actor, point) -> "armed" | "parked" | "released"
sync = Blueprint("sync", __name__, url_prefix="/__harbor/sync/v1")
def reach(point, timeout=30.0):
    key = (request.headers.get("x-harbor-actor"), point)
    with _cv:
        if _slots.get(key) != "armed": return
        _slots[key] = "parked"; _cv.notify_all()
        if not _cv.wait_for(lambda: _slots.get(key) == "released", timeout):
            _slots.pop(key, None); raise TimeoutError(f"sync point {point} was not released")
        _slots.pop(key); _cv.notify_all()
@sync.get("")
def describe(): return jsonify(protocol="harbor-sync-points", version=1, points=POINTS)
@sync.route("/<actor>/<point>", methods=["PUT", "GET", "DELETE"])
def slot(actor, point):
    if point not in POINTS: return jsonify(error={"code": "UNKNOWN_POINT", "message": point}), 400
    key = (actor, point)
    with _cv:
        if request.method == "PUT":
            if key in _slots: return jsonify(error={"code": "ALREADY_ARMED", "message": point}), 409
            _slots[key] = "armed"; _cv.notify_all(); return jsonify(state="armed"), 201
        if request.method == "GET":
            if request.args.get("wait") == "parked":
                _cv.wait_for(lambda: _slots.get(key) == "parked", min(int(request.args.get("timeout_ms", 0)), 60000) / 1000)
            return jsonify(state=_slots.get(key, "none"))
        state = _slots.get(key)
        if state is None: return jsonify(error={"code": "NOT_ARMED", "message": point}), 404
        if state == "armed": del _slots[key]; return jsonify(state="disarmed")
        _slots[key] = "released"; _cv.notify_all(); return jsonify(state="released")
@sync.delete("")
def release_all():
    with _cv:
        for key, state in list(_slots.items()):
            if state == "parked": _slots[key] = "released"
            else: _slots.pop(key)
        _cv.notify_all()
    return "", 204
