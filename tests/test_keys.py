"""Key names: readable, hash-tagged by queue, and names that would break the tag refused."""

from __future__ import annotations

import pytest

from pyqcore import ConfigurationError
from pyqcore.keys import QueueKeys, registry_key


def test_keys_are_readable_and_tagged() -> None:
    keys = QueueKeys("pyqcore", "emails")
    assert keys.key("ready") == "pyqcore:{emails}:ready"
    assert keys.lock("user:7") == "pyqcore:{emails}:lock:user:7"
    assert registry_key("pyqcore") == "pyqcore:queues"
    assert QueueKeys("pyqcore", "emails", 3).key("ready") == "pyqcore:{emails#3}:ready"


@pytest.mark.parametrize("name", ["", "a}b", "{a}", "a b", "tab\t", "x" * 201, "q#1"])
def test_names_that_break_keys_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        QueueKeys("pyqcore", name)
