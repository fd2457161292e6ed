"""Clients: close codes and what to do after each, backoff, the reconnecting client, and a browser page."""

from __future__ import annotations

from .backoff import JITTERS, STRATEGIES, Backoff, Delays
from .policy import CloseEvent, GiveUp, ReconnectPolicy, Retry, SequenceTracker
from .reconnect import BufferFull, ClientState, Message, ReconnectingClient

__all__ = [
    "JITTERS", "STRATEGIES", "Backoff", "BufferFull", "ClientState", "CloseEvent", "Delays", "GiveUp", "Message",
    "ReconnectPolicy", "ReconnectingClient", "Retry", "SequenceTracker",
]
