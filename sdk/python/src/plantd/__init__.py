"""The plantd client for Python.

Typed REST calls (models generated from the proxy's and identity's OpenAPI
documents), password sessions with refresh-token rotation or static tokens, and live
subscriptions as async iterators that resume across reconnects without
missing or repeating a message::

    import plantd

    async with await plantd.Client.login(url, "me@example.com", password) as client:
        async with client.live.subscribe("plant-1", "line1/+/temp") as sub:
            async for m in sub:
                print(m.topic, m.text())

Modules:

* :mod:`plantd.client` — :class:`Client`: sites, state (ETag / If-Match),
  telemetry (last, history as an async iterator), commands, service calls,
  logs, alerts, analytics results, audit.
* :mod:`plantd.live` — :class:`Live`: subscriptions, publish, the reconnect
  state machine and its :class:`LinkState` stream.
* :mod:`plantd.auth` — :class:`PasswordSession`, :class:`ClientCredentials`,
  :class:`StaticToken`.
* :mod:`plantd.errors` — :class:`PlantdError` and a subclass per kind.
* :mod:`plantd.models` — generated from the proxy's ``/openapi.json``, and
  :mod:`plantd.identity_models` from identity's ``/v1/identity/openapi.json``
  (do not edit); :mod:`plantd.records` — their answers under the client's
  older names (``Alert``, ``Site``, ``AuditRecord``).
* :mod:`plantd.sync` — the same API for code without an event loop.
"""

from .auth import ClientCredentials, PasswordSession, StaticToken, TokenSource
from .client import Client, Reply, Versioned
from .errors import (
    BadRequestError,
    ClosedError,
    ConflictError,
    ForbiddenError,
    GatewayTimeoutError,
    NetworkError,
    NotFoundError,
    PlantdError,
    Refused,
    RefusedError,
    RequestTimeout,
    SlowConsumer,
    TooLargeError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
)
from .live import LinkState, Live, LiveMessage, LiveOptions, StateStream, Subscription
from .models import Order

__all__ = [
    "BadRequestError",
    "Client",
    "ClientCredentials",
    "ClosedError",
    "ConflictError",
    "ForbiddenError",
    "GatewayTimeoutError",
    "LinkState",
    "Live",
    "LiveMessage",
    "LiveOptions",
    "NetworkError",
    "NotFoundError",
    "Order",
    "PasswordSession",
    "PlantdError",
    "Refused",
    "RefusedError",
    "Reply",
    "RequestTimeout",
    "SlowConsumer",
    "StateStream",
    "StaticToken",
    "Subscription",
    "TokenSource",
    "TooLargeError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "Versioned",
]
