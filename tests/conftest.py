"""Shared fixtures. Tests run on the CPU in float64 unless a test asks for float32 explicitly."""

import os

import jax
import pytest

jax.config.update("jax_enable_x64", True)  # gradient tests compare in float64 (dtype is explicit elsewhere)
jax.config.update("jax_numpy_rank_promotion", "raise")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str):
    """Skip a test that needs an optional resource, but fail under CI=true where the resource must exist."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(f"{reason} (skipped outside CI only)")


@pytest.fixture
def key():
    return jax.random.key(0)
