"""Prefect flows: thin wiring, one per stage, plus the end-to-end flow.

Importing this package imports nothing heavy; each flow module imports Prefect itself, and
the CLI imports a flow module only when it runs through Prefect.
"""
