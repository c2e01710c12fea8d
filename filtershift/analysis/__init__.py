"""The analysis (docs/design.md §2): PCA of the filters, grouped coefficient histograms, shift matrices
and layer statistics, streamed over the filter store in at most three reads.

Pure modules (``settings``, ``plan``, ``pca``, ``histograms``, ``divergence``, ``layerstats``,
``groups``, ``summary``, ``types``) compute; ``passes`` runs the three streaming reads; ``compute``
drives them; ``results`` is the only one that touches ``DB/results/NAME/``.
"""

from filtershift.analysis.results import Results, load_results

__all__ = ["Results", "load_results"]
