"""Challengers, the previous champion and the policy's own decisions in the registry: every fact an event in the chain."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from ml_assets_tests.conftest import register_version
from resources import FailureNotifier, ModelRegistry, RegistryError


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'registry.sqlite'}")
    for version, auc in (("lgbm-00000000000a", 0.8), ("torch-0000000000b", 0.78), ("lgbm-00000000000c", 0.82)):
        register_version(registry, version, roc_auc=auc)
    return registry


def test_the_default_challenger_is_the_best_unpromoted_candidate_then_the_previous_champion(registry: ModelRegistry) -> None:
    assert registry.challengers() == []  # no champion: nothing to challenge
    registry.promote("lgbm-00000000000a", actor="test", reason="first", run_id="r1")
    # The newest training's best candidate that passed parity and was not promoted.
    assert [v.version for v in registry.challengers()] == ["lgbm-00000000000c"]
    registry.promote("lgbm-00000000000c", actor="test", reason="better", run_id="r2")
    assert registry.previous_champion() == "lgbm-00000000000a"
    assert [v.version for v in registry.challengers()] == ["lgbm-00000000000a"]


def test_a_person_sets_and_clears_challengers_with_who_and_why(registry: ModelRegistry) -> None:
    registry.promote("lgbm-00000000000a", actor="test", reason="first", run_id="r1")
    with pytest.raises(RegistryError, match="actor and a reason"):
        registry.set_challenger("torch-0000000000b", actor="", reason="")
    with pytest.raises(RegistryError, match="is the champion"):
        registry.set_challenger("lgbm-00000000000a", actor="ana", reason="x")
    registry.set_challenger("torch-0000000000b", actor="ana", reason="compare the network live")
    assert [v.version for v in registry.challengers()] == ["torch-0000000000b"]
    events = [e for e in registry.chain()[0] if e["action"] == "challenger_set"]
    assert events[-1]["actor"] == "ana" and events[-1]["reason"] == "compare the network live"
    registry.clear_challenger("torch-0000000000b", actor="ana", reason="done")
    assert [v.version for v in registry.challengers()] == ["lgbm-00000000000c"]  # back to the default
    assert registry.verify(artifacts=_NoArtifacts()) == []  # the chain holds every one of these facts


def test_an_automatic_rollback_happens_once_and_blocks_the_version(registry: ModelRegistry) -> None:
    registry.promote("lgbm-00000000000a", actor="test", reason="first", run_id="r1")
    registry.promote("lgbm-00000000000c", actor="test", reason="forced", run_id="r2", action="rolled_back")
    evidence = {"roc_auc": {"estimate": 0.51}}
    assert registry.auto_rollback(to="lgbm-00000000000a", from_="lgbm-00000000000c", reason="below floor", evidence=evidence, run_id="r3")
    # The same event seen again (a re-run, the next day) finds the champion changed: nothing happens twice.
    assert not registry.auto_rollback(to="lgbm-00000000000a", from_="lgbm-00000000000c", reason="again", evidence=evidence, run_id="r4")
    assert registry.champion().version == "lgbm-00000000000a"
    assert [e["action"] for e in registry.chain()[0]].count("auto_rolled_back") == 1
    assert "0.51" in next(e for e in registry.chain()[0] if e["action"] == "auto_rolled_back")["reason"]
    assert registry.auto_blocked() == {"lgbm-00000000000c"}
    # Never promoted again by the policy, and not offered as the default challenger; a person still may.
    assert not registry.auto_promote("lgbm-00000000000c", over="lgbm-00000000000a", reason="won", evidence={}, run_id="r5")
    assert "lgbm-00000000000c" not in [v.version for v in registry.challengers()]
    registry.promote("lgbm-00000000000c", actor="ana", reason="fixed upstream", run_id="r6")
    assert registry.champion().version == "lgbm-00000000000c"


class _NoArtifacts:
    def get(self, uri: str, sha: str) -> bytes:
        return b""


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:
        type(self).bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_alerts_are_slack_compatible_link_the_run_and_are_sent_once_per_event(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook?token=s3cret"
        notifier = FailureNotifier(record_root=str(tmp_path), webhook_url=url, ui_url="http://dagster.example:3000/")
        first = notifier.alert("rollback", "lgbm-00000000000c", "churn: automatic rollback", {"to": "lgbm-00000000000a"}, "run-1")
        again = notifier.alert("rollback", "lgbm-00000000000c", "churn: automatic rollback", {"to": "lgbm-00000000000a"}, "run-2")
        other = notifier.alert("promotion", "lgbm-00000000000c", "churn: promoted", {}, None)
    finally:
        server.shutdown()
    assert (first, again, other) == ("sent 204", "duplicate", "sent 204")
    body = _Receiver.bodies[0]
    assert body["text"] == "churn: automatic rollback (http://dagster.example:3000/runs/run-1)" and body["to"] == "lgbm-00000000000a"
    assert len(_Receiver.bodies) == 2 and len(list((tmp_path / "alerts").rglob("*.json"))) == 2
    # Without a webhook the alert is still recorded (and still once).
    quiet = FailureNotifier(record_root=str(tmp_path / "quiet"))
    assert quiet.alert("drift", "k", "t", {}) == "off" and quiet.alert("drift", "k", "t", {}) == "duplicate"
