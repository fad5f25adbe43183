"""The property suite's end-of-run summary under pytest-xdist: each worker hands its records to
the controller as plain data, and the controller's merged summary counts every example."""

from __future__ import annotations

import json

from property_tests import _support
from property_tests._support import PropertyRecord


def test_worker_records_merge_into_one_summary(monkeypatch):
    first = PropertyRecord(examples=2, checks=10, refused={"taylor/gq": "why"}, pairs={"rk4/direct"}, worst=1e-9,
                           worst_ratio=0.2, worst_detail="rk4/direct a", failed_examples=1,
                           failed_pairs={"rk4/direct": 1}, worst_ratio_by_method={"rk4": 0.2})
    second = PropertyRecord(examples=3, checks=5, pairs={"dopri5/gq", "rk4/direct"}, worst=1e-8, worst_ratio=0.5,
                            worst_detail="dopri5/gq b", failed_pairs={"rk4/direct": 2},
                            worst_ratio_by_method={"rk4": 0.1, "dopri5": 0.5})
    handed = []
    for record in (first, second):  # two workers ran examples of the same property
        monkeypatch.setattr(_support, "SUMMARY", {"1 reference": record, f"only {len(handed)}": PropertyRecord()})
        handed.append(json.loads(json.dumps(_support.summary_records())))  # plain data, as execnet sends it
    monkeypatch.setattr(_support, "SUMMARY", {})
    for records in handed:
        _support.merge_records(records)
    merged = _support.SUMMARY["1 reference"]
    assert (merged.examples, merged.checks, merged.failed_examples) == (5, 15, 1)
    assert merged.pairs == {"rk4/direct", "dopri5/gq"} and merged.refused == {"taylor/gq": "why"}
    assert merged.failed_pairs == {"rk4/direct": 3}
    assert (merged.worst, merged.worst_ratio, merged.worst_detail) == (1e-8, 0.5, "dopri5/gq b")
    assert merged.worst_ratio_by_method == {"rk4": 0.2, "dopri5": 0.5}
    assert set(_support.SUMMARY) == {"1 reference", "only 0", "only 1"}
    assert any(line.startswith("1 reference") and " 5 " in line for line in _support.format_summary())
