"""MXNet engine tests: run only in the separate MXNet virtualenv.

    .venv-mxnet/bin/python -m pytest -p no:django --confcutdir=tests/mxnet tests/mxnet

Without mxnet these tests skip (the main virtualenv never has it), unless MXNET_TESTS_REQUIRED=1
(set by CI's MXNet job): then a missing or broken mxnet fails the run instead of skipping it.
``--confcutdir`` keeps the Django conftest of tests/ out of this virtualenv.
"""

from __future__ import annotations

import os
import sys

import pytest

REQUIRED = os.environ.get("MXNET_TESTS_REQUIRED") == "1"

if REQUIRED:
    try:
        import mxnet.gluon  # noqa: F401  (not just 'mxnet': see test_mxnet_engine.py)
    except Exception as exc:  # ImportError, or OSError for a missing libgomp/libquadmath
        raise pytest.UsageError(
            f"MXNET_TESTS_REQUIRED=1 but mxnet cannot be imported by {sys.executable}: {exc!r}. "
            "Create the MXNet virtualenv with scripts/setup_mxnet.sh and run the tests with "
            ".venv-mxnet/bin/python -m pytest."
        ) from exc
