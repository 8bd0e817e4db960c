"""`histocurate dataset ...`: curated datasets (build, list, show, import, export)."""
