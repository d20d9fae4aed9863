"""The reliability tier: each way a run could lose results or fail silently, reproduced.

Every test here is marked ``reliability`` (and not ``slow``), so it runs with the fast tier in CI;
``pytest -m reliability`` runs this tier alone. Shared parts: ``reliability_common.py``.
"""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability: the reliability tier (tests/reliability; part of the fast tier)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.reliability)
