"""How the examples connect: ``PLANTD_URL`` and either ``PLANTD_TOKEN`` (a
service-account token) or ``PLANTD_EMAIL`` + ``PLANTD_PASSWORD``."""

from __future__ import annotations

import os

import plantd


async def client() -> plantd.Client:
    """A client from the environment."""
    url = os.environ.get("PLANTD_URL", "http://127.0.0.1:8080")
    token = os.environ.get("PLANTD_TOKEN")
    if token:
        return plantd.Client.with_token(url, token)
    return await plantd.Client.login(url, os.environ["PLANTD_EMAIL"], os.environ["PLANTD_PASSWORD"])
