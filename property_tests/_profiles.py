"""The hypothesis profiles of the property suite (registered on import; conftest loads one).

``ci``: 4 examples per property, derandomized so CI runs are reproducible (the default).
``dev``: ≥ 200 random examples per property. ``catch`` (:data:`CATCH`) is ``ci`` without
shrinking: the same examples, stopping at the first failing one — what tests/test_mutation.py
runs the properties under to show that they catch a wrong backend, and a quick way to see every
failure of a change (``HYPOTHESIS_PROFILE=catch``).
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=4, derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.register_profile("catch", settings.get_profile("ci"),
                          phases=(Phase.explicit, Phase.reuse, Phase.generate))
CATCH = settings.get_profile("catch")
