"""Bayesian calibration of a disease's parameters against every published trial number, and leave-one-trial-out
predictive validation (``mscsim calibrate``)."""
