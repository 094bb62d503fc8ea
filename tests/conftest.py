"""Test-wide settings: hypothesis without per-example deadlines (CI machines vary in speed),
derandomized so a CI run is reproducible; set HYPOTHESIS_PROFILE=explore for fresh examples."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("c2lite", deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "c2lite"))
