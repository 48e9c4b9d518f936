"""Studies (floor 5): each runner returns a typed result from :mod:`exitwise.results`."""

from exitwise.experiments.efficiency import choose_threshold, efficiency_study

__all__ = ["choose_threshold", "efficiency_study"]
