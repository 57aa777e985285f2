"""Sluice: the CloudEvents ingest service.

The modules follow the data flow: :mod:`sluice.cloudevents` turns an HTTP request into
validated events (or a client error from :mod:`sluice.errors`), :mod:`sluice.apikeys` decides
which tenant a request belongs to.
"""

__version__ = "0.1.0"
