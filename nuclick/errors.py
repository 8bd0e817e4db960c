"""Errors NuClick raises on purpose (kept free of histocurate so the package stands alone)."""

from __future__ import annotations


class NuClickError(ValueError):
    """Bad input to NuClick: the message says what is wrong and what to do."""


class CheckpointError(NuClickError):
    """A checkpoint cannot be read or does not fit the network (keys listed)."""
