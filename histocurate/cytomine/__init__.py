"""Cytomine: export a campaign, import the annotations, and a local compatible server.

Modules: `credentials` (keys from the environment or Prefect Secret blocks), `client`
(adapter over cytomine-python-client 4.3), `api` (idempotent operations), `export`,
`importer`, `rest` (raw signed requests, one session per user), `profiles` and
`simulate` (simulated pathologists), `sandbox` (the local server), `demo` (a running
sandbox with users, for demos and tests).
"""
