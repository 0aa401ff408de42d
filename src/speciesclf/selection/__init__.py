"""Choosing a collection's model: recipes, cross-validation folds, the select stage's work."""
