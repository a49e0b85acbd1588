import pytest


@pytest.fixture
def small():
    """A small layer's arguments: builds in microseconds, runs in milliseconds."""
    return dict(hidden=64, inter=128, experts=4, top_k=2, max_tokens=64)
