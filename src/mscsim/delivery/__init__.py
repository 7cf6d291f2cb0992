"""Delivery: routes, sites, guidance and placement accuracy, and how a dose enters the model."""

from .routes import DEFAULT_SITE, LOCAL_ROUTES, is_local, placement_parameter, split_dose

__all__ = ["DEFAULT_SITE", "LOCAL_ROUTES", "is_local", "placement_parameter", "split_dose"]
