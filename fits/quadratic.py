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


# Alternative surface forms, for the specification spread of ``fits.optimum`` -----------------
#
# Real loss curves are asymmetric in the learning rate (a gentle rise below the optimum, a wall
# above it), so the full quadratic is a misspecified model whose vertex moves with the window of
# trials it is fitted on. Two richer forms, each with p extra coefficients, say how far:
#
# * ``cubic``: the quadratic plus d_j z_j^3 per knob. Its vertex is the stationary point found by
#   Newton's method from the quadratic's vertex, a local minimum when the local Hessian
#   K = H + diag(6 d x*) is positive definite.
# * ``split``: the quadratic plus q_j ((z_j - k_j)_+)^2 per knob, a curvature that changes by 2 q_j
#   at the knot k (a "split" or two-sided quadratic). The knot is iterated onto the vertex itself
#   (fit with the knot at the previous vertex, move the knot to the new vertex, until it stops
#   moving), so at the end the vertex is where the curvature changes; it is a minimum when both
#   sides are convex (H and H + diag(2 q) positive definite).
#
# Each fit returns its vertex and the vertex's influence dx*/dy (p x n, the linearisation in the
# fitted losses), from which ``fits.optimum`` gets the noise covariance of any average of
# vertices fitted on the same trials: Cov(x*_s, x*_t) = sigma^2 G_s G_t' for trials with
# independent noise of variance sigma^2. By the implicit function theorem, G(x*, beta) = 0 for G
# the surface's gradient gives dx*/dbeta = -K^-1 dG/dbeta with K = dG/dx (for the quadratic,
# K = H: ``vertex_jacobian``), and the WLS coefficients are beta = (X'WX)^-1 X'W y, so
# dx*/dy = dx*/dbeta (X'WX)^-1 X'W. For ``split`` the knot k = x* moves with y too: with g(k)
# the vertex of the fit with its knot at k, x* = g(x*) gives dx*/dy = (I - dg/dk)^-1 dg/dy|_k.

SURFACE_FORMS = ("quadratic", "cubic", "split")


def form_design(z: np.ndarray, form: str, knot: np.ndarray | None = None) -> np.ndarray:
    """``design_matrix`` plus the form's extra columns: z_j^3 (cubic), ((z_j - knot_j)_+)^2 (split)."""
    x = design_matrix(z)
    if form == "quadratic":
        return x
    z = np.atleast_2d(np.asarray(z, dtype=float))
    if form == "cubic":
        return np.column_stack([x, z ** 3])
    if form == "split":
        return np.column_stack([x, np.maximum(z - knot, 0.0) ** 2])
    raise ValueError(f"form must be one of {SURFACE_FORMS}, got {form!r}")


def n_form_coefficients(p: int, form: str) -> int:
    """Coefficients of a form: the quadratic's, plus p for cubic and split."""
    return n_coefficients(p) + (0 if form == "quadratic" else p)


def _wls_solve(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(beta, dbeta/dy = (X'WX)^-1 X'W) from one SVD of the weighted design A = W^1/2 X
    (A^+ = V S^-1 U'); None when A is rank-deficient (a column with no support, e.g. a split
    knot beyond every point), with numpy's matrix_rank tolerance."""
    sw = np.sqrt(np.asarray(weights, dtype=float))
    a = x * sw[:, None]
    u, sv, vt = np.linalg.svd(a, full_matrices=False)
    if sv.size == 0 or sv[-1] <= sv[0] * max(a.shape) * np.finfo(float).eps:
        return None
    hat = (vt.T / sv) @ (u.T * sw[None, :])        # A^+ diag(sqrt w) = (X'WX)^-1 X'W
    return hat @ np.asarray(y, dtype=float), hat


def gradient_jacobian(beta: np.ndarray, p: int, form: str, xs: np.ndarray) -> np.ndarray:
    """dG/dbeta at x*, shape (p, n_form_coefficients(p, form)), G the surface's gradient."""
    dg = np.zeros((p, n_form_coefficients(p, form)))
    dg[:, 1:1 + p] = np.eye(p)                                     # G = b + ...
    for j in range(p):
        dg[j, 1 + p + j] = 2.0 * xs[j]                              # H_jj = 2 q_jj
    idx = 1 + 2 * p
    for j in range(p):
        for k in range(j + 1, p):
            dg[j, idx] = xs[k]                                      # H_jk = q_jk
            dg[k, idx] = xs[j]
            idx += 1
    if form == "cubic":
        dg[:, idx:] = np.diag(3.0 * xs ** 2)                         # d/dd_j of d_j x_j^3 -> 3 x_j^2
    # split: at the knot (x* = k) the hinge term and its gradient vanish: no contribution.
    return dg


def _newton_cubic(beta: np.ndarray, p: int, start: np.ndarray, iters: int = 30) -> np.ndarray | None:
    m = n_coefficients(p)
    _, b, hess = unpack(beta[:m], p)
    d = beta[m:]
    x = np.asarray(start, dtype=float).copy()
    for _ in range(iters):
        try:
            step = np.linalg.solve(hess + np.diag(6.0 * d * x), b + hess @ x + 3.0 * d * x ** 2)
        except np.linalg.LinAlgError:
            return None
        x = x - step
        if not np.all(np.isfinite(x)):
            return None
        if np.max(np.abs(step)) < 1e-10:
            return x
    return None


def fit_form(z: np.ndarray, y: np.ndarray, weights: np.ndarray, form: str,
             start: np.ndarray | None = None, max_knot_moves: int = 60) -> tuple[np.ndarray, np.ndarray] | None:
    """(vertex, influence dx*/dy of shape (p, n)) of one surface form fitted by WLS, or None when
    the fit is rank-deficient or has no convex stationary point. ``start``: the quadratic's
    vertex (Newton's start for cubic, the first knot for split; None: the quadratic part's own)."""
    z = np.atleast_2d(np.asarray(z, dtype=float))
    p = z.shape[1]
    m = n_coefficients(p)
    if z.shape[0] <= n_form_coefficients(p, form):
        return None
    if form == "split":
        return _split_fit(z, y, weights, start, max_knot_moves)
    solved = _wls_solve(form_design(z, form), y, weights)
    if solved is None:
        return None
    beta, hat = solved
    _, b, hess = unpack(beta[:m], p)
    if form == "quadratic":
        if not np.all(np.linalg.eigvalsh(hess) > 0):
            return None
        xs, k_local = -np.linalg.solve(hess, b), hess
    else:
        if start is None:
            try:
                start = -np.linalg.solve(hess, b)
            except np.linalg.LinAlgError:
                return None
        xs = _newton_cubic(beta, p, start)
        if xs is None:
            return None
        k_local = hess + np.diag(6.0 * beta[m:] * xs)
        if not np.all(np.linalg.eigvalsh(k_local) > 0):
            return None     # a stationary point, but not a minimum
    return xs, -np.linalg.solve(k_local, gradient_jacobian(beta, p, form, xs)) @ hat


def _split_fit(z: np.ndarray, y: np.ndarray, weights: np.ndarray, start: np.ndarray | None,
               max_knot_moves: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The split quadratic's vertex, knot iterated onto it, and its influence (notes above)."""
    if start is None:
        quad = fit_form(z, y, weights, "quadratic")
        if quad is None:
            return None
        start = quad[0]
    base = design_matrix(z)
    prev: tuple[np.ndarray, np.ndarray] | None = None
    knot = np.asarray(start, dtype=float).copy()
    for _ in range(max_knot_moves):
        step = _split_step(z, y, weights, base, knot)
        if step is None:
            return None
        xs = step[0]
        if np.max(np.abs(xs - knot)) < 1e-7:
            return _split_influence(z, y, weights, base, xs, step[2])
        # The fixed point k = g(k) is approached linearly (0 <= g' < 1 per knob), so each move is
        # extrapolated by the secant: k* = k + (g(k) - k) / (1 - s), s = (g(k) - g(k_prev)) /
        # (k - k_prev) (Steffensen's acceleration); a slope outside [0, 0.95] takes the plain move.
        new = xs.copy()
        if prev is not None:
            dk = knot - prev[0]
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = (xs - prev[1]) / dk
            ok = np.isfinite(slope) & (slope >= 0.0) & (slope <= 0.95) & (np.abs(dk) > 1e-12)
            new[ok] = knot[ok] + (xs[ok] - knot[ok]) / (1.0 - slope[ok])
        prev = (knot, xs)
        knot = new
    return None


def _split_step(z: np.ndarray, y: np.ndarray, weights: np.ndarray, base: np.ndarray,
                knot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One move of the knot: (g, h, dh/dy) of the split fit with its knot at ``knot``, where g is
    its vertex (the next knot) and h = -H^-1 b the stationary point of its quadratic part (at the
    fixed point g = h = x*, the hinge vanishing there); None when the fit is rank-deficient or
    not convex on both sides."""
    p = z.shape[1]
    m = n_coefficients(p)
    solved = _wls_solve(np.column_stack([base, np.maximum(z - knot, 0.0) ** 2]), y, weights)
    if solved is None:
        return None
    beta, hat = solved
    _, b, hess = unpack(beta[:m], p)
    q = beta[m:]
    if not (np.all(np.linalg.eigvalsh(hess) > 0) and np.all(np.linalg.eigvalsh(hess + np.diag(2.0 * q)) > 0)):
        return None
    # Convex on both sides: the vertex solves b + H x + 2 q (x - k)_+ = 0, linear on each side of
    # the knot; solved for the active set {j: x_j > k_j} until the set stops changing.
    active = np.zeros(p, dtype=bool)
    for _ in range(2 * p + 2):
        a = active.astype(float)
        xs = np.linalg.solve(hess + np.diag(2.0 * q * a), -(b - 2.0 * q * a * knot))
        now = xs > knot
        if np.array_equal(now, active):
            break
        active = now
    h = -np.linalg.solve(hess, b)
    return xs, h, -np.linalg.solve(hess, gradient_jacobian(beta, p, "split", h)) @ hat


def _split_influence(z: np.ndarray, y: np.ndarray, weights: np.ndarray, base: np.ndarray, xs: np.ndarray,
                     dh_dy: np.ndarray, eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray] | None:
    """(x*, dx*/dy) at the fixed point x* = h(x*, y): (I - dh/dk)^-1 dh/dy, with dh/dk by central
    differences (2p refits; h is smooth in k, the hinge column's derivative -2 (z - k)_+ being
    continuous)."""
    p = z.shape[1]
    dhdk = np.zeros((p, p))
    for j in range(p):
        e = np.zeros(p)
        e[j] = eps
        hi, lo = _split_step(z, y, weights, base, xs + e), _split_step(z, y, weights, base, xs - e)
        if hi is None or lo is None:
            return None
        dhdk[:, j] = (hi[1] - lo[1]) / (2.0 * eps)
    try:
        return xs, np.linalg.solve(np.eye(p) - dhdk, dh_dy)
    except np.linalg.LinAlgError:
        return None
