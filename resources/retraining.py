"""The retraining policy as a resource, so that each environment sets it in one place."""

import dagster as dg

from keel_core.retraining import RetrainingPolicy


class Retraining(dg.ConfigurableResource):
    """When the retraining sensor asks for a new model (see ``keel_core.retraining``)."""

    labelled_days: int = RetrainingPolicy.labelled_days

    def policy(self) -> RetrainingPolicy:
        return RetrainingPolicy(labelled_days=self.labelled_days)
