"""Consensus labels: majority vote per nucleus, and Dawid-Skene EM over a whole campaign.

"Cell with unknown type" (``unknown``) counts for detection, never as a vote: it is left out
of both the votes and the number of voters. So two annotators saying (lymphocyte, unknown)
give ``lymphocyte`` (one voter, one vote), and (lymphocyte, plasmocyte) gives no label.
``labels`` (the proposed set) holds the distinct types voted, sorted; it is ``['unknown']``
only when every member said ``unknown``, so it is never empty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from histocurate.labels import LABELS, UNKNOWN

LABEL_RULES = ("majority", "dawid-skene")


def proposed_labels(votes: Sequence[str]) -> list[str]:
    """Distinct types proposed, sorted; ``['unknown']`` when no member gave a type."""
    types = sorted({v for v in votes if v != UNKNOWN.id})
    return types or [UNKNOWN.id]


def majority_label(votes: Sequence[str]) -> str | None:
    """The type chosen by more than half of the members that gave a type, else None.

    >>> majority_label(["lymphocyte", "lymphocyte", "plasmocyte"])
    'lymphocyte'
    >>> majority_label(["lymphocyte", "unknown"])
    'lymphocyte'
    >>> majority_label(["lymphocyte", "plasmocyte"]) is None
    True
    """
    typed = [v for v in votes if v != UNKNOWN.id]
    if not typed:
        return None
    label, count = Counter(typed).most_common(1)[0]
    return label if 2 * count > len(typed) else None


@dataclass(frozen=True, slots=True)
class DawidSkeneFit:
    """What EM estimated: class priors, one confusion matrix per annotator, item posteriors.

    ``confusion[j, k, l]`` = P(annotator j says type l | true type k), types in ontology
    order. ``posterior[i, k]`` = P(item i is type k | its votes); rows of items without any
    typed vote are the priors.
    """

    annotators: list[str]
    priors: np.ndarray
    confusion: np.ndarray
    posterior: np.ndarray
    iterations: int
    converged: bool

    def labels(self, *, min_probability: float = 0.5) -> tuple[list[str | None], np.ndarray]:
        """Most probable type per item when its posterior exceeds ``min_probability``."""
        best = self.posterior.argmax(axis=1)
        prob = self.posterior.max(axis=1)
        out: list[str | None] = [
            LABELS[b] if p > min_probability else None for b, p in zip(best, prob, strict=True)
        ]
        return out, prob

    def accuracy(self) -> dict[str, float]:
        """Per annotator: estimated probability of giving the right type (prior-weighted)."""
        diag = np.einsum("jkk->jk", self.confusion)
        return {a: float(diag[j] @ self.priors) for j, a in enumerate(self.annotators)}


def dawid_skene(
    item_votes: Sequence[Sequence[tuple[str, str]]],
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    diag_prior: float = 2.0,
    off_prior: float = 0.1,
) -> DawidSkeneFit:
    """Dawid-Skene EM: per-annotator confusion matrices and per-item type posteriors.

    ``item_votes[i]`` lists ``(annotator, label)`` for item i (``unknown`` votes are ignored,
    as in the majority rule). Starts from the soft majority vote; stops when no posterior
    moves by ``tol`` or more (labels are settled long before the likelihood is). ``diag_prior`` and
    ``off_prior`` are Dirichlet pseudo-counts on each confusion row (diagonal and off-
    diagonal): annotators with few examples of a rare type are assumed better than chance
    rather than uniform, which keeps rare-type votes from being washed out.
    """
    k = len(LABELS)
    class_of = {label: c for c, label in enumerate(LABELS)}
    names = sorted({a for votes in item_votes for a, lab in votes if lab != UNKNOWN.id})
    annot_of = {a: j for j, a in enumerate(names)}
    item_idx, annot_idx, label_idx = [], [], []
    for i, votes in enumerate(item_votes):
        for a, lab in votes:
            if lab != UNKNOWN.id:
                item_idx.append(i)
                annot_idx.append(annot_of[a])
                label_idx.append(class_of[lab])
    n, m = len(item_votes), len(names)
    items = np.asarray(item_idx, dtype=np.int64)
    who = np.asarray(annot_idx, dtype=np.int64)
    said = np.asarray(label_idx, dtype=np.int64)
    has_vote = np.bincount(items, minlength=n) > 0

    # Initial posteriors: the soft majority vote.
    post = np.zeros((n, k))
    np.add.at(post, (items, said), 1.0)
    post[~has_vote] = 1.0 / k
    post /= post.sum(axis=1, keepdims=True)

    pseudo = np.full((k, k), off_prior)
    np.fill_diagonal(pseudo, diag_prior)
    converged = False
    iterations = 0
    priors = np.full(k, 1.0 / k)
    confusion = np.tile(pseudo / pseudo.sum(axis=1, keepdims=True), (max(m, 1), 1, 1))
    while iterations < max_iter and not converged:
        iterations += 1
        # M-step: priors and confusion rows from the current posteriors.
        priors = post[has_vote].sum(axis=0) + 1.0
        priors /= priors.sum()
        counts = np.zeros((m, k, k))
        for c in range(k):
            flat = np.bincount(who * k + said, weights=post[items, c], minlength=m * k)
            counts[:, c, :] = flat.reshape(m, k)
        confusion = counts + pseudo
        confusion /= confusion.sum(axis=2, keepdims=True)
        # E-step: log posterior = log prior + sum of the votes' log likelihoods.
        log_conf = np.log(confusion)
        log_post = np.tile(np.log(priors), (n, 1))
        for c in range(k):
            log_post[:, c] += np.bincount(items, weights=log_conf[who, c, said], minlength=n)
        log_post -= log_post.max(axis=1, keepdims=True)
        new = np.exp(log_post)
        new /= new.sum(axis=1, keepdims=True)
        new[~has_vote] = priors
        change = float(np.abs(new - post).max()) if n else 0.0
        post = new
        converged = change < tol
    return DawidSkeneFit(names, priors, confusion, post, iterations, converged)
