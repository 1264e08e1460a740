"""The online feature store as a Dagster resource: the store a URL names (``keel_core.online_store``).

``sqlite:////abs/path`` locally, ``redis://host:port/db`` in production; ``resources/environments.py``
chooses. The scoring service opens the same URL itself (``KEEL_ONLINE_STORE_URL``), without Dagster.
"""

import dagster as dg

from keel_core.online_store import FeatureView, OnlineStore, open_store


class OnlineFeatureStore(dg.ConfigurableResource):
    url: str
    namespace: str  # keys of its own in a shared Redis
    # A publish writes every entity: give it longer than a lookup on the request path gets.
    timeout_seconds: float = 10.0

    def open(self, view: FeatureView) -> OnlineStore:
        """The store of ``view`` (a use case's online features)."""
        return open_store(self.url, self.namespace, view, timeout_seconds=self.timeout_seconds)
