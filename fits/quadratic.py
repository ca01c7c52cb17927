"""Full quadratic response surface, its vertex, and the vertex covariance by the delta method.

The surface in p coordinates z (already transformed and scaled by the caller) is

    L(z) = c + b' z + 1/2 z' H z,

fitted as a linear model in the columns [1, z_1..z_p, z_j^2 (j), z_j z_k (j<k)] (Box & Wilson
1951; Myers, Montgomery & Anderson-Cook, *Response Surface Methodology*, ch. 6). With q_jj the
coefficient of z_j^2 and q_jk that of z_j z_k, H_jj = 2 q_jj and H_jk = H_kj = q_jk.

The vertex (stationary point) is x* = -H^{-1} b; its covariance by the delta method is
J Sigma J' with J = d x* / d beta (Myers et al. section 6.3):

    d x* / d b       = -H^{-1}
    d x* / d q_jj    = -2 H^{-1} e_j x*_j
    d x* / d q_jk    = -H^{-1} (e_j x*_k + e_k x*_j)      (from dx* = -H^{-1} dH x*)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm


def n_coefficients(p: int) -> int:
    """Coefficients of a full quadratic in p variables: 1 + p + p(p+1)/2."""
    return 1 + p + p * (p + 1) // 2


def design_matrix(z: np.ndarray) -> np.ndarray:
    """Columns [1, z_j, z_j^2, z_j z_k (j<k)] for points ``z`` of shape (n, p)."""
    z = np.atleast_2d(np.asarray(z, dtype=float))
    n, p = z.shape
    cols = [np.ones(n)]
    cols += [z[:, j] for j in range(p)]
    cols += [z[:, j] ** 2 for j in range(p)]
    cols += [z[:, j] * z[:, k] for j in range(p) for k in range(j + 1, p)]
    return np.column_stack(cols)


def unpack(beta: np.ndarray, p: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(c, b, H) from the coefficient vector in ``design_matrix`` order."""
    beta = np.asarray(beta, dtype=float)
    c = float(beta[0])
    b = beta[1:1 + p].copy()
    hess = np.zeros((p, p))
    for j in range(p):
        hess[j, j] = 2.0 * beta[1 + p + j]
    idx = 1 + 2 * p
    for j in range(p):
        for k in range(j + 1, p):
            hess[j, k] = hess[k, j] = beta[idx]
            idx += 1
    return c, b, hess


def vertex(beta: np.ndarray, p: int) -> np.ndarray:
    """Stationary point x* = -H^{-1} b (raises numpy.linalg.LinAlgError when H is singular)."""
    _, b, hess = unpack(beta, p)
    return -np.linalg.solve(hess, b)


def vertex_jacobian(beta: np.ndarray, p: int) -> np.ndarray:
    """d x* / d beta, shape (p, n_coefficients(p)); see the module docstring."""
    _, _, hess = unpack(beta, p)
    hinv = np.linalg.inv(hess)
    xs = vertex(beta, p)
    jac = np.zeros((p, n_coefficients(p)))
    jac[:, 1:1 + p] = -hinv
    for j in range(p):
        jac[:, 1 + p + j] = -2.0 * hinv[:, j] * xs[j]
    idx = 1 + 2 * p
    for j in range(p):
        for k in range(j + 1, p):
            jac[:, idx] = -(hinv[:, j] * xs[k] + hinv[:, k] * xs[j])
            idx += 1
    return jac


@dataclass(frozen=True)
class SurfaceFit:
    """A fitted quadratic surface (coordinates as given to ``fit_surface``)."""

    p: int
    beta: np.ndarray
    cov: np.ndarray
    df_resid: float
    n: int

    @property
    def hessian(self) -> np.ndarray:
        return unpack(self.beta, self.p)[2]

    @property
    def convex(self) -> bool:
        """True when H is positive definite (a minimum, not a saddle or a ridge)."""
        return bool(np.all(np.linalg.eigvalsh(self.hessian) > 0.0))

    def predict(self, z: np.ndarray) -> np.ndarray:
        return design_matrix(z) @ self.beta

    def vertex(self) -> np.ndarray:
        return vertex(self.beta, self.p)

    def vertex_cov(self) -> np.ndarray:
        jac = vertex_jacobian(self.beta, self.p)
        return jac @ self.cov @ jac.T

    def min_value(self) -> float:
        """Fitted value at the vertex: c + b'x*/2."""
        c, b, _ = unpack(self.beta, self.p)
        return float(c + 0.5 * b @ self.vertex())


def fit_surface(z: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, *,
                min_scale: float | None = None) -> SurfaceFit:
    """Weighted least squares (statsmodels WLS) of a full quadratic; ``weights`` are relative
    inverse variances; the residual scale is estimated from the data, as in ordinary WLS, and
    raised to ``min_scale`` (a variance known from elsewhere, per unit weight) when below it:
    WLS's covariance is scale * (X'WX)^-1, so the floor multiplies it by min_scale / scale."""
    z = np.atleast_2d(np.asarray(z, dtype=float))
    y = np.asarray(y, dtype=float)
    n, p = z.shape
    m = n_coefficients(p)
    if n <= m:
        raise ValueError(f"fit_surface needs more than {m} points for {p} variables, got {n}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    result = sm.WLS(y, design_matrix(z), weights=w).fit()
    scale = result.scale if min_scale is None else max(result.scale, min_scale)
    return SurfaceFit(p=p, beta=np.asarray(result.params), cov=np.asarray(result.normalized_cov_params) * scale,
                      df_resid=float(result.df_resid), n=n)


def fit_surface_fast(z: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Coefficients only (for bootstrap refits): the same WLS solved with numpy lstsq."""
    sw = np.sqrt(np.asarray(weights, dtype=float))
    x = design_matrix(z) * sw[:, None]
    beta, *_ = np.linalg.lstsq(x, np.asarray(y, dtype=float) * sw, rcond=None)
    return beta
