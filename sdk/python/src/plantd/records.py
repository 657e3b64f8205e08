"""Models of answers no OpenAPI document types: the alert list (the proxy
documents it untyped). Written by hand from ``docs/api.md``; unknown fields
are kept (``extra="allow"``), so a newer server does not break an older SDK.

The identity service's answers (sites, the audit trail, whoami, tokens) are
generated from its document into :mod:`plantd.identity_models`; ``Site`` and
``AuditRecord`` are re-exported here under the names the client has always
used."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .identity_models import AuditRecord
from .identity_models import SiteRecord as Site

__all__ = ["Alert", "AuditRecord", "Site"]


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
