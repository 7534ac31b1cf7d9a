"""Signed checkpoints of the audit chain through real HTTP and the real CLI: written every
N events and on demand, exported in a bundle with the keys that verify them, checked
offline by ``ringfence audit verify-export`` and by the few lines of Python the docs show
(run here, taken from docs/audit.md, so the docs cannot drift): a changed or removed
event is named, a checkpoint signed by another key is refused, and a checkpoint signed
before a key rotation still verifies with the exported keys."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import RSAKey

from gateway.audit.checkpoints import CHECKPOINT_TYPE, checkpoint_claims, read_checkpoint
from gateway.config import Settings
from tests.helpers import LiveServer, assert_problem, create_workspaces, invite_and_accept, run_cli

EVERY = 5
DOCS = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, audit_checkpoint_every=EVERY)


def head_id(admin: httpx.Client) -> int:
    [newest] = admin.get("/audit", params={"page_size": 1}).json()
    return int(newest["id"])


def checkpoints(admin: httpx.Client) -> list[dict[str, Any]]:
    response = admin.get("/audit/checkpoints", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()))


def bundle(admin: httpx.Client, path: Path, **params: str) -> list[dict[str, Any]]:
    response = admin.get("/audit/export", params={"format": "bundle", **params})
    assert response.status_code == 200, response.text
    path.write_text(response.text, encoding="utf-8")
    return [json.loads(line) for line in response.text.splitlines()]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def verify_export(settings: Settings, path: Path, *extra: str) -> Any:
    return run_cli(settings, "audit", "verify-export", str(path), *extra)


def test_checkpoints_every_n_events_and_on_demand(server: LiveServer, tmp_path: Path) -> None:
    admin = server.admin()
    start = head_id(admin)
    create_workspaces(admin, *(f"ws{n}" for n in range(12)))
    end = head_id(admin)
    assert end - start >= 2 * EVERY
    auto = [c for c in checkpoints(admin) if c["trigger"] == "auto"]
    # One per multiple of N crossed (a transaction crossing one signs the head it commits).
    crossed = set(range(start // EVERY + 1, end // EVERY + 1))
    assert [c["head_id"] // EVERY for c in auto] == sorted(crossed)
    jwks = server.client().get("/.well-known/jwks.json").json()
    trail = {e["id"]: e["hash"] for e in admin.get("/audit", params={"page_size": 1000}).json()}
    for checkpoint in auto:
        claims = read_checkpoint(checkpoint["jws"], jwks)
        assert claims["head_id"] == checkpoint["head_id"] == claims["count"]
        assert claims["head_hash"] == checkpoint["head_hash"] == trail[checkpoint["head_id"]]
        assert claims["iss"] == server.settings.issuer

    # On demand: the head now, over the API and the CLI.
    made = admin.post("/audit/checkpoints")
    assert made.status_code == 201, made.text
    assert made.json()["head_id"] == head_id(admin) and made.json()["trigger"] == "manual"
    cli = run_cli(server.settings, "audit", "checkpoint")
    assert cli.exit_code == 0, cli.output
    assert f"event {head_id(admin)}" in cli.output

    # The bundle carries them and the keys; the offline check passes.
    lines = bundle(admin, tmp_path / "bundle.jsonl")
    assert lines[0]["ringfence_audit_export"] == 1 and lines[0]["complete"] is True
    assert len([x for x in lines if "checkpoint" in x]) == len(auto) + 2
    checked = verify_export(server.settings, tmp_path / "bundle.jsonl")
    assert checked.exit_code == 0, checked.output
    assert f"signed up to event {head_id(admin)}" in checked.output

    # Super admins only: a workspace admin gets 403, and their bundle has no checkpoints.
    _, acme_admin = invite_and_accept(server, admin, "wanda@example.com", "W", [("ws1", "admin")])
    assert_problem(acme_admin.get("/audit/checkpoints"), 403, "forbidden")
    assert_problem(acme_admin.post("/audit/checkpoints"), 403, "forbidden")
    theirs = bundle(acme_admin, tmp_path / "theirs.jsonl")
    assert theirs[0]["complete"] is False and not [x for x in theirs if "checkpoint" in x]
    assert verify_export(server.settings, tmp_path / "theirs.jsonl").exit_code == 0
    with server.client() as anonymous:
        assert_problem(anonymous.get("/audit/checkpoints"), 401, "unauthorized")
    assert_problem(admin.get("/audit/checkpoints", params={"limit": 0}), 422, "invalid-input")


def test_a_changed_or_removed_event_is_named(server: LiveServer, tmp_path: Path) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex", "initech")
    admin.post("/audit/checkpoints")
    lines = bundle(admin, tmp_path / "bundle.jsonl")
    events = [i for i, x in enumerate(lines) if "hash" in x]
    victim = lines[events[len(events) // 2]]

    changed = [dict(x) for x in lines]
    changed[events[len(events) // 2]] = {**victim, "actor_name": "Somebody Else"}
    result = verify_export(server.settings, write_lines(tmp_path / "changed.jsonl", changed))
    assert result.exit_code == 1
    assert f"event {victim['id']}: its content does not match its hash" in result.output
    assert f"first bad event: {victim['id']}" in result.output

    # The hash recomputed too: the link to the next event and the checkpoint refuse it.
    from gateway.audit.chain import compute_hash

    rehashed = {**victim, "actor_name": "Somebody Else"}
    rehashed["hash"] = compute_hash(rehashed, rehashed["prev_hash"])
    changed[events[len(events) // 2]] = rehashed
    result = verify_export(server.settings, write_lines(tmp_path / "rehashed.jsonl", changed))
    assert result.exit_code == 1
    assert f"event {victim['id'] + 1}: its prev_hash is not event {victim['id']}'s" in result.output

    removed = [x for x in lines if x is not victim]
    result = verify_export(server.settings, write_lines(tmp_path / "removed.jsonl", removed))
    assert result.exit_code == 1
    assert f"events {victim['id']}..{victim['id']} are missing" in result.output

    # The newest event changed with its hash: only the checkpoint over it can tell.
    last = dict(lines[events[-1]])
    last["reason"] = "nothing to see"
    last["hash"] = compute_hash(last, last["prev_hash"])
    tail = [*lines[: events[-1]], last, *lines[events[-1] + 1 :]]
    result = verify_export(server.settings, write_lines(tmp_path / "tail.jsonl", tail))
    assert result.exit_code == 1 and "is not the signed one" in result.output


def test_a_forged_checkpoint_is_refused(server: LiveServer, tmp_path: Path) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    admin.post("/audit/checkpoints")
    lines = bundle(admin, tmp_path / "bundle.jsonl")
    real_jwks = server.client().get("/.well-known/jwks.json").json()
    (tmp_path / "jwks.json").write_text(json.dumps(real_jwks))
    last = [x for x in lines if "hash" in x][-1]
    forger = RSAKey.generate_key(2048)
    claims = checkpoint_claims(last["id"], last["hash"], server.settings.issuer, 0)
    body = json.dumps(claims).encode()

    # Signed by another key under the installation's kid: the signature fails.
    kid = real_jwks["keys"][0]["kid"]
    header = {"alg": "RS256", "typ": CHECKPOINT_TYPE, "kid": kid}
    forged = [*lines[:-1], {"checkpoint": jws.serialize_compact(header, body, forger)}, lines[-1]]
    result = verify_export(server.settings, write_lines(tmp_path / "forged.jsonl", forged))
    assert result.exit_code == 1 and "signature does not verify" in result.output

    # The forger's own key in the bundle's JWKS: the saved JWKS refuses it.
    own = {"alg": "RS256", "typ": CHECKPOINT_TYPE, "kid": forger.thumbprint()}
    swapped = [
        *[x for x in lines if "jwks" not in x and "checkpoint" not in x],
        {"checkpoint": jws.serialize_compact(own, body, forger)},
        {"jwks": {"keys": [{**forger.as_dict(private=False), "kid": forger.thumbprint()}]}},
    ]
    path = write_lines(tmp_path / "swapped.jsonl", swapped)
    assert verify_export(server.settings, path).exit_code == 0  # self-consistent, alone
    result = verify_export(server.settings, path, "--jwks", str(tmp_path / "jwks.json"))
    assert result.exit_code == 1 and "which is not in the JWKS" in result.output
    honest = verify_export(
        server.settings, tmp_path / "bundle.jsonl", "--jwks", str(tmp_path / "jwks.json")
    )
    assert honest.exit_code == 0, honest.output


def test_checkpoints_verify_after_the_key_is_rotated_and_retired(
    server: LiveServer, tmp_path: Path
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    first = admin.post("/audit/checkpoints").json()
    assert run_cli(server.settings, "keys", "rotate").exit_code == 0
    retired = run_cli(server.settings, "keys", "retire", first["kid"])
    assert retired.exit_code == 0, retired.output
    published = server.client().get("/.well-known/jwks.json").json()
    assert first["kid"] not in {k["kid"] for k in published["keys"]}
    admin = server.admin()  # the old key's token was retired with it
    create_workspaces(admin, "globex")
    second = admin.post("/audit/checkpoints").json()
    assert second["kid"] != first["kid"]

    lines = bundle(admin, tmp_path / "bundle.jsonl")
    exported = {k["kid"] for k in lines[-1]["jwks"]["keys"]}
    assert exported == {first["kid"], second["kid"]}
    result = verify_export(server.settings, tmp_path / "bundle.jsonl")
    assert result.exit_code == 0, result.output
    assert f"checkpoint at event {first['head_id']}" in result.output


def test_the_documented_python_verifies_a_bundle(server: LiveServer, tmp_path: Path) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    made = admin.post("/audit/checkpoints").json()
    bundle(admin, tmp_path / "audit-bundle.jsonl")
    text = DOCS.read_text(encoding="utf-8")
    marker = text.index("<!-- tested by tests/functional/test_audit_checkpoints.py -->")
    found = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert found
    run = subprocess.run(
        [sys.executable, "-c", found.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert f"signed up to event {made['head_id']}" in run.stdout

    lines = (tmp_path / "audit-bundle.jsonl").read_text().splitlines()
    tampered = [json.loads(x) for x in lines]
    tampered[2] = {**tampered[2], "action": "nothing.happened"}
    write_lines(tmp_path / "audit-bundle.jsonl", tampered)
    run = subprocess.run(
        [sys.executable, "-c", found.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0 and f"event {tampered[2]['id']}" in run.stderr
