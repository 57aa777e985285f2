"""The HTTP API (``sluice serve``): from a request to Kafka, and the read side.

:mod:`~sluice.api.app` is the Starlette app over the Protocols of :mod:`~sluice.api.ports`;
:mod:`~sluice.api.auth` turns a bearer credential into a tenant (API keys in
:mod:`~sluice.api.apikeys`, or OIDC tokens); :mod:`~sluice.api.server` runs the app under
uvicorn and drains it on SIGTERM. The adapters behind the ports are in :mod:`sluice.adapters`
and :mod:`sluice.storage`; :mod:`sluice.service` wires them.
"""
