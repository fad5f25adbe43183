"""Hypothesis profiles for the property suite and the end-of-run summary.

Profiles (property_tests/_profiles.py): ``ci`` (few examples, derandomized so CI runs are
reproducible; the default) and ``dev`` (≥ 200 examples per property, random). Choose with
``HYPOTHESIS_PROFILE=dev``. ``ODEGRAD_PROPERTY_SUMMARY=path.json`` also writes the summary
table's numbers to a file. Under pytest-xdist (the suite's default, ``-n auto``) each worker hands
its records to the controller, which prints and writes the merged summary.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from ._profiles import CATCH  # noqa: F401 - registers the profiles
from ._support import SUMMARY, current_pairs, format_summary, merge_records, summary_records, write_summary

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


def pytest_sessionfinish(session):
    output = getattr(session.config, "workeroutput", None)
    if output is not None:  # a pytest-xdist worker: the controller prints the summary
        output["odegrad_property_summary"] = summary_records()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist's controller: add a finished worker's property records to the summary."""
    merge_records(getattr(node, "workeroutput", {}).get("odegrad_property_summary", {}))
