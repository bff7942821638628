"""Hypothesis profiles for the CLI fuzz suite (tests/test_fuzz_cli.py).

``FABRICSIM_FUZZ_PROFILE`` picks one: ``ci`` (default: a few hundred cases, deterministic, under two
minutes) or ``long`` (10,000 cases in all, random, for a soak run)::

    FABRICSIM_FUZZ_PROFILE=long python -m pytest -q -p no:cacheprovider tests/test_fuzz_cli.py

Only the fuzz tests load these profiles; every other hypothesis test keeps hypothesis' defaults.
"""

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("fuzz-ci", derandomize=True, **_COMMON)
settings.register_profile("fuzz-long", derandomize=False, **_COMMON)
