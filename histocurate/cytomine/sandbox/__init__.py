"""A local Cytomine-compatible server (SQLite, HMAC auth, fault injection) for tests and demos."""

from histocurate.cytomine.sandbox.faults import FaultInjector
from histocurate.cytomine.sandbox.server import SandboxHTTPServer, serve_in_thread, signature
from histocurate.cytomine.sandbox.store import SandboxDB

__all__ = ["FaultInjector", "SandboxDB", "SandboxHTTPServer", "serve_in_thread", "signature"]
