"""Hypothesis profiles for the property suite and the end-of-run summary.

Profiles: ``ci`` (few examples, derandomized so CI runs are reproducible; the default) and
``dev`` (≥ 200 examples per property, random). Choose with ``HYPOTHESIS_PROFILE=dev``.
``ODEGRAD_PROPERTY_SUMMARY=path.json`` also writes the summary table's numbers to a file.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from ._support import PAIRS, SUMMARY, format_summary, write_summary

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=4, derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config):
    return [f"odegrad property suite: hypothesis profile {settings.get_current_profile_name()!r}, "
            f"{len(PAIRS)} solver x backend pairs"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not SUMMARY:
        return
    terminalreporter.section("odegrad gradient-correctness summary")
    for line in format_summary():
        terminalreporter.write_line(line)
    write_summary()
