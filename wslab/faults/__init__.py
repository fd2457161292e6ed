"""Faults, inflicted for real: the fault proxy, the four ways a client dies, and the kernel's own errors."""

from __future__ import annotations

from .failures import FAILURE_MODES, FailureMode, Outcome, Victim, connect_victim, inflict, observe, run_failure
from .proxy import FAULTS, Fault, FaultProxy, ProxyConnection, start_proxy

__all__ = [
    "FAILURE_MODES", "FAULTS", "FailureMode", "Fault", "FaultProxy", "Outcome", "ProxyConnection", "Victim",
    "connect_victim", "inflict", "observe", "run_failure", "start_proxy",
]
