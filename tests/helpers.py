"""Helpers for tests: the live server client, the CLI, the outbox."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from typing import Any

import httpx
from click.testing import CliRunner
from flask import Flask

from gateway.config import Settings

ADMIN_EMAIL = "admin@example.com"


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that makes the real ``ringfence`` command use ``settings``."""
    return {
        "RINGFENCE_INSTANCE_DIR": str(settings.instance_dir),
        "RINGFENCE_DATABASE_URL": settings.database_url,
        "RINGFENCE_SECRET_KEY": settings.secret_key,
        "RINGFENCE_ADMIN_EMAIL": settings.admin_email,
        "RINGFENCE_ADMIN_NAME": settings.admin_name,
        "RINGFENCE_POLICIES_DIR": str(settings.policies_dir),
    }


def run_cli(settings: Settings, *args: str, input: str | None = None) -> Any:
    from gateway.cli import main

    return CliRunner().invoke(main, list(args), env=cli_env(settings), input=input)


@dataclass
class LiveServer:
    url: str
    app: Flask
    settings: Settings
    admin_password: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def login(self, email: str, password: str) -> httpx.Client:
        with self.client() as anonymous:
            response = anonymous.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return self.client(response.json()["access_token"])

    def admin(self) -> httpx.Client:
        return self.login(ADMIN_EMAIL, self.admin_password)


def outbox_messages(settings: Settings) -> list[Any]:
    """The emails written to the outbox folder, oldest first."""
    return [
        message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in sorted(settings.outbox_path.glob("*.eml"))
    ]


def accept_token(message: Any) -> str:
    """The invitation token from the accept link in an email's text part."""
    body = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(r"/accept\?token=([A-Za-z0-9_\-%]+)", body)
    assert match, body
    return match.group(1)
