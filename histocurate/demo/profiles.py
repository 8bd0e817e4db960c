"""Simulated pathologists: who misses what, how far they click, what they confuse.

Each profile is a person's habits, applied to the known truth of a tile by
`histocurate.demo.pathologists.simulate_clicks`. The nine defaults differ on purpose so
that consensus has disagreements to resolve (the paper's validation used 9 annotators).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Types people mistake for one another (symmetric use: a -> b and b -> a).
CONFUSABLE: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "lymphocyte": ("plasmocyte", "apoptotic_body"),
        "plasmocyte": ("lymphocyte",),
        "fibroblast": ("smooth_muscle_cell", "endothelial_cell"),
        "smooth_muscle_cell": ("fibroblast",),
        "endothelial_cell": ("fibroblast",),
        "cancer_cell": ("epithelial_cell", "macrophage", "mitotic_figure"),
        "epithelial_cell": ("cancer_cell",),
        "macrophage": ("cancer_cell",),
        "eosinophil": ("neutrophil",),
        "neutrophil": ("eosinophil", "apoptotic_body"),
        "mitotic_figure": ("cancer_cell", "apoptotic_body"),
        "apoptotic_body": ("lymphocyte", "mitotic_figure"),
        "red_blood_cell": ("eosinophil",),
    }
)


@dataclass(frozen=True, slots=True)
class AnnotatorProfile:
    """Habits of one annotator (rates are probabilities per true nucleus)."""

    username: str
    miss_rate: float = 0.08
    miss_by_type: Mapping[str, float] = field(default_factory=dict)
    jitter_um: float = 0.8  # standard deviation of the click offset, micrometres
    confusion_rate: float = 0.05
    skip_rare_rate: float = 0.0  # extra chance to ignore a rare-type cell
    unknown_rate: float = 0.02  # says "Cell with unknown type"
    false_click_rate: float = 0.01  # clicks on no nucleus, per true nucleus

    def miss(self, label: str) -> float:
        return float(self.miss_by_type.get(label, self.miss_rate))


DEFAULT_PROFILES: tuple[AnnotatorProfile, ...] = (
    AnnotatorProfile("pathologist01", miss_rate=0.03, jitter_um=0.5, confusion_rate=0.02),
    AnnotatorProfile("pathologist02", miss_rate=0.15, jitter_um=1.0),  # fast, misses cells
    AnnotatorProfile("pathologist03", jitter_um=2.0),  # imprecise clicks
    AnnotatorProfile("pathologist04", skip_rare_rate=0.5),  # rarely bothers with rare types
    AnnotatorProfile("pathologist05", unknown_rate=0.12),  # often unsure
    AnnotatorProfile(
        "pathologist06",
        confusion_rate=0.15,
        miss_by_type={"plasmocyte": 0.3},  # lumps immune cells together
    ),
    AnnotatorProfile(
        "pathologist07", miss_by_type={"fibroblast": 0.35, "smooth_muscle_cell": 0.35}
    ),
    AnnotatorProfile("pathologist08", false_click_rate=0.06, miss_rate=0.04),  # over-clicks
    AnnotatorProfile(
        "pathologist09", miss_rate=0.12, jitter_um=1.5, confusion_rate=0.1, unknown_rate=0.05
    ),  # junior
)
"""Nine annotators with different habits (usernames ``pathologist01`` .. ``09``)."""


def default_profiles(usernames: list[str] | None = None) -> list[AnnotatorProfile]:
    """The default habits, optionally renamed to ``usernames`` (cycled if more than 9)."""
    if usernames is None:
        return list(DEFAULT_PROFILES)
    from dataclasses import replace

    return [
        replace(DEFAULT_PROFILES[i % len(DEFAULT_PROFILES)], username=name)
        for i, name in enumerate(usernames)
    ]
