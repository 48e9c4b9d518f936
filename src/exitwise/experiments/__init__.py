"""Studies: each runner returns plain dictionaries (JSON-ready tables) for the report."""

from exitwise.experiments.efficiency import POLICY_FAMILIES, choose_threshold, efficiency_study

__all__ = ["POLICY_FAMILIES", "choose_threshold", "efficiency_study"]
