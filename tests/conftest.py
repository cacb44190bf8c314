"""Shared fixtures (helpers live in support.py, importable as ``from support import ...``)."""

from __future__ import annotations

import pytest
from support import tiny_config

from boosting_tickets.training.hparams import RunConfig


@pytest.fixture
def tiny_cfg() -> RunConfig:
    return tiny_config()
