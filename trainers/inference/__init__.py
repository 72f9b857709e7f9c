"""Scoring saved models and judging the scores: scorers, candidate ranking, AUC / UAUC and their local
``evaluate`` modules."""
