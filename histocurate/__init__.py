"""histocurate: from H&E whole-slide images to a curated multi-pathologist nuclei dataset.

Stages (one run function, one Prefect flow and one CLI command each; `histocurate.stages`
maps their names): tile, embed, select, export/import (Cytomine), segment (NuClick),
consensus, dataset, evaluate; the README (usage table) and `benchmarks/RESULTS.md` (measured
numbers) are the documents to start from.
"""

__version__ = "0.1.0"
