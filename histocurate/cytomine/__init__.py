"""Cytomine: export a campaign, import its annotations, push the consensus back.

Modules, from the wire up: `credentials` (keys from the environment or Prefect Secret
blocks, never logged), `retry` (the one retry policy), `client` (adapter over
cytomine-python-client 4.3) and `probe` (connecting, with one-line errors), `listing` (lists
read whole), `projects`, `images` and `upload` (idempotent operations; uploads through
PIMS), `rest` (raw signed sessions, one per user); the stages: `selected`, `frozen`,
`assignments`, `export`; `fetch`, `convert`, `importer`; `push`; and `stage`, `push_stage`,
`runs` (the stage contract and reports). The sandbox server and the simulated pathologists
are demo code, in `histocurate.demo`.
"""
