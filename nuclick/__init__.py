"""NuClick: a point-to-mask U-Net for nuclei (model, training, inference), usable alone."""
