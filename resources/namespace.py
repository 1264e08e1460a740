"""The namespace a run writes to, for the assets that name things after it (Bentos) or record it."""

import dagster as dg


class Namespace(dg.ConfigurableResource):
    """Whose data this run writes: ``prod`` or a person's or an experiment's (resources/environments.py)."""

    name: str
    environment: str
