"""A fixture catching exceptions that escape any thread during a test."""
from __future__ import annotations

import threading

import pytest


@pytest.fixture
def thread_exceptions():
    """Exceptions that escape any thread during the test (none may)."""
    caught = []
    previous = threading.excepthook
    threading.excepthook = caught.append
    yield caught
    threading.excepthook = previous
