"""Fits: pure maths over ``Observation`` records (numpy, scipy, statsmodels only)."""

from fits.observation import Observation

__all__ = ["Observation"]
