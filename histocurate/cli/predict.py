"""`histocurate predict`: CellViT inference on dataset tiles and whole slides."""
