"""histocurate: from H&E whole-slide images to a curated multi-pathologist nuclei dataset.

Stages (one module, one Prefect flow and one CLI command each): tile, embed, select,
export/import (Cytomine), segment (NuClick), consensus, evaluate. See DESIGN.md.
"""

__version__ = "0.1.0"
