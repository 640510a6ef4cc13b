"""The Band operator: exact per-token ratio bounds from an f-divergence trust region (BandPO).

`band_bounds(old_logp, delta=0.05, divergence="kl")` returns the interval of ratios π_new/π_old that keep
D_f(π_new‖π_old) ≤ δ for each sampled token (docs/theory.md, "The Band constraint"). Divergences are
`Divergence` records in a registry: built-ins `kl`, `reverse_kl`, `tv`, `chi2`, `neyman_chi2`, `hellinger`,
`js`, the α-family (`"alpha:<α>"` / `alpha_divergence`), and any convex f a user registers.

Default path: KL on float32 log-probs reads a cached float64-built table (`kl.kl_bounds_table`); float64 input
is solved in float64 (monotone Newton for KL, closed forms for TV/χ²/Neyman χ²/Hellinger, the generic
bisection/regula-falsi solver otherwise); bfloat16/float16 input is solved in float64 and rounded once. Each
path is a field of the `Divergence` record (`float32_path`, `closed_form`). The naive equivalent they are all
tested against is `bandpo.band.reference.reference_bounds`, a plain float64 bisection of the two-point
constraint. Theory: docs/theory.md.

Imports point one way: `_numerics` ← `kl`, `closed_forms`, `generator` ← `divergences` ← `generic_solver`,
`reference` ← `operator` ← this package.
"""

from bandpo.band.divergences import alpha_divergence, get_divergence, list_divergences, register_divergence
from bandpo.band.generator import Divergence
from bandpo.band.operator import (
    DELTA_MAX,
    DELTA_MIN,
    LOGP_TOLERANCE,
    BandBounds,
    band_bounds,
    check_delta,
    logp_tolerance,
)

__all__ = [
    "DELTA_MAX",
    "DELTA_MIN",
    "LOGP_TOLERANCE",
    "BandBounds",
    "Divergence",
    "alpha_divergence",
    "band_bounds",
    "check_delta",
    "get_divergence",
    "list_divergences",
    "logp_tolerance",
    "register_divergence",
]
