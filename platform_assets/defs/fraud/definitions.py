"""The fraud use case's definitions: what its hand-written modules declare (see ``__init__.py``)."""

import dagster as dg

from platform_assets.defs.fraud import features, jobs, models, monitoring, scores, sensors, serving

defs = dg.load_definitions_from_modules([features, models, scores, serving, monitoring, sensors, jobs])
