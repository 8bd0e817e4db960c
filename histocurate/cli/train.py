"""`histocurate train`: CellViT (HistoPLUS) training on a curated dataset."""
