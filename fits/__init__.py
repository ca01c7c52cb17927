"""Fits: pure maths over ``Observation`` records (numpy, scipy, statsmodels only).

Public API:
    fit_optimum, KnobSpec, RungOptimum, Flag, CategoricalChoice   per-rung optimum (fits.optimum)
    fit_trend, TrendFit, TrendInterval, backtest_leave_largest_out,
    Backtest, predict_from_parameter_draws, DrawPrediction           trends across rungs (fits.power_law)
    trend_from_optima                                                 trend from RungOptimum objects (fits.trend)
    fit_loss_law_n, fit_loss_law_nd, LossLawFit                       loss laws (fits.loss_law)
    fit_compute_optimal, ComputeOptimalFit, ComputeOptimalPrediction,
    BudgetFit, group_budgets                                          isoFLOP laws (fits.compute_optimal)
    ConfidenceInterval                                                (fits.intervals)
    simulate_ladder, SimulatedLadder                                  ladders with known truth (fits.calibration)
"""

from fits.calibration import SimulatedLadder, simulate_ladder, target_truth
from fits.compute_optimal import (BudgetFit, ComputeOptimalFit, ComputeOptimalPrediction, fit_compute_optimal,
                                  group_budgets)
from fits.intervals import ConfidenceInterval
from fits.loss_law import ConvergenceWarning, LossLawFit, fit_loss_law_n, fit_loss_law_nd
from fits.observation import Observation
from fits.optimum import CategoricalChoice, Flag, KnobSpec, RungOptimum, fit_optimum
from fits.power_law import (Backtest, DrawPrediction, TrendFit, TrendInterval, backtest_leave_largest_out,
                            fit_trend, predict_from_parameter_draws)
from fits.trend import trend_from_optima

__all__ = [
    "Backtest", "BudgetFit", "CategoricalChoice", "ComputeOptimalFit", "ComputeOptimalPrediction",
    "ConfidenceInterval", "ConvergenceWarning", "DrawPrediction", "Flag", "KnobSpec", "LossLawFit", "Observation",
    "RungOptimum", "SimulatedLadder", "TrendFit", "TrendInterval", "backtest_leave_largest_out",
    "fit_compute_optimal", "fit_loss_law_n", "fit_loss_law_nd", "fit_optimum", "fit_trend", "group_budgets",
    "predict_from_parameter_draws", "simulate_ladder", "target_truth", "trend_from_optima",
]
