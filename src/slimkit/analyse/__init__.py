"""Analysis: statistics and profiles of a model."""
