"""Demo-only code, apart from the production stages: a Cytomine-compatible sandbox server
(`sandbox`, with server version profiles), simulated pathologists (`pathologists`, their
habits in `profiles`), a running sandbox with users (`annotation`), and the demo's steps
(`runner`). Nothing in `histocurate.cytomine` imports from here."""
