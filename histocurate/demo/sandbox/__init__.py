"""A local Cytomine-compatible server (SQLite, HMAC auth, PIMS's asynchronous import, server
version profiles, fault injection) for tests and demos. Not part of the production client."""

from histocurate.demo.sandbox.faults import FaultInjector
from histocurate.demo.sandbox.server import SandboxHTTPServer, serve_in_thread, signature
from histocurate.demo.sandbox.store import SandboxDB
from histocurate.demo.sandbox.versions import CURRENT, PROFILES, SUPPORTED, ServerProfile

__all__ = [
    "CURRENT",
    "PROFILES",
    "SUPPORTED",
    "FaultInjector",
    "SandboxDB",
    "SandboxHTTPServer",
    "ServerProfile",
    "serve_in_thread",
    "signature",
]
