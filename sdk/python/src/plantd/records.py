"""Models of answers no OpenAPI document describes: the identity service's
(sites, the audit trail; identity has no document yet) and the alert list
(the proxy documents it untyped). Written by hand from ``docs/api.md``;
unknown fields are kept (``extra="allow"``), so a newer server does not
break an older SDK."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Site(BaseModel):
    """A registered site (``GET /v1/sites``)."""

    model_config = ConfigDict(extra="allow")

    id: str
    """The site id (``plantd.<site>.…`` subjects)."""
    org: str
    """The organisation that owns it."""
    name: str = ""
    """Display name."""
    description: str = ""
    """Free text."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels (``line=north``)."""
    created_ms: int | None = None
    """When it was registered, ms since the epoch."""


class AuditRecord(BaseModel):
    """One record of an organisation's audit trail (``GET /v1/audit``)."""

    model_config = ConfigDict(extra="allow")

    seq: int
    """Its sequence in ``PLANTD_AUDIT``."""
    hash: str
    """SHA-256 of its stored bytes."""
    n: int
    """Its number in the organisation's hash chain."""
    time: str
    """When (RFC 3339)."""
    org: str
    """The organisation whose trail it is in."""
    actor: str
    """Who acted (user, service account, device id)."""
    actor_kind: str
    """``user``, ``service_account``, ``device``, …"""
    action: str
    """What was done (``site.create``, ``auth.login``, …)."""
    target: str = ""
    """What it was done to (``site:plant-7``)."""
    outcome: str
    """``success`` or a refusal."""
    request_id: str | None = None
    """The ``x-request-id`` of the request."""
    detail: dict[str, Any] | None = None
    """What else the action recorded."""


class Alert(BaseModel):
    """An alert instance (``GET /v1/alerts``). The proxy's document leaves
    this answer untyped; the fields are those ``docs/api.md`` lists."""

    model_config = ConfigDict(extra="allow")

    id: str
    """The instance id (``<rule>.<hash of its key>``)."""
    rule: str
    """The rule that made it."""
    site: str | None = None
    """The site."""
    key: str | None = None
    """The group key (``topic=line1/oven/temp``)."""
    labels: dict[str, Any] = Field(default_factory=dict)
    """Its labels."""
    severity: str
    """``info``, ``warning`` or ``critical``."""
    state: str
    """``inactive``, ``pending``, ``firing`` or ``no_data``."""
