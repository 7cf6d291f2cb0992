"""The cell product: source, culture history, viability, cryo state -> potency and survival factors."""

from .product import PotencyFactors, Product, doublings_from_passage, potency_factors

__all__ = ["Product", "PotencyFactors", "potency_factors", "doublings_from_passage"]
