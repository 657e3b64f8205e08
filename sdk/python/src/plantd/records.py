"""Re-exports under the names the client has always used: ``Alert`` is the
proxy's ``AlertView`` (:mod:`plantd.models`, generated from the proxy's
``/openapi.json``); ``Site`` and ``AuditRecord`` are the identity service's
answers (:mod:`plantd.identity_models`, generated from its document). Every
JSON answer of both documents is typed (decision 0050)."""

from __future__ import annotations

from .identity_models import AuditRecord
from .identity_models import SiteRecord as Site
from .models import AlertView as Alert

__all__ = ["Alert", "AuditRecord", "Site"]
