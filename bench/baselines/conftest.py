"""pytest settings of the baselines' tests: say on a line of its own whether the comparison with
transformers' MoE blocks (``test_transformers.py``) ran, since it is skipped where transformers
is not installed."""

from __future__ import annotations

import importlib.util


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest's hook signature
    if importlib.util.find_spec("transformers") is None:
        terminalreporter.write_line(
            "SKIPPED the comparison with transformers' MoE blocks (test_transformers.py): transformers is not "
            "installed in this environment")
        return
    ran = [r for r in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
           if "test_transformers.py" in r.nodeid]
    import transformers

    terminalreporter.write_line(
        f"compared {len(ran)} layers with transformers {transformers.__version__}'s MoE blocks (test_transformers.py)")
