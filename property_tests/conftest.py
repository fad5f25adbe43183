"""Hypothesis profiles for the property suite and the end-of-run summary.

Profiles (property_tests/_profiles.py): ``ci`` (few examples, derandomized so CI runs are
reproducible; the default) and ``dev`` (≥ 200 examples per property, random). Choose with
``HYPOTHESIS_PROFILE=dev``. ``ODEGRAD_PROPERTY_SUMMARY=path.json`` also writes the summary
table's numbers to a file.
"""

from __future__ import annotations

import os

from hypothesis import settings

from ._profiles import CATCH  # noqa: F401 - registers the profiles
from ._support import SUMMARY, current_pairs, format_summary, write_summary

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config):
    return [f"odegrad property suite: hypothesis profile {settings.get_current_profile_name()!r}, "
            f"{len(current_pairs())} solver x backend pairs"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not SUMMARY:
        return
    terminalreporter.section("odegrad gradient-correctness summary")
    for line in format_summary():
        terminalreporter.write_line(line)
    write_summary()
