"""The cost model's rates (:mod:`stir_lib.jobs.cost`), fitted by
``benchmarks/cost_model.py calibrate --write`` on the cache entries of a cold ci build
(written by that script; do not edit by hand).
"""

__all__ = ["BUILD", "DATE", "MACHINE", "RATES", "NOTEBOOK_SECONDS"]

BUILD = 'ca7cbfd'          # the commit whose cold ci build was measured
DATE = '2026-12-07'
MACHINE = 'x86_64, 2 cores'
# family -> FLOP/s sustained, fixed seconds per forward/backward pass over a batch,
# and the number of jobs the fit saw (an infinite rate: the fit puts the family's
# time on its passes alone)
RATES = {
    'attack/lbfgs': {"flops_per_second": 1.527e+10, "seconds_per_call": 0, "jobs": 34},
    'inversion/conv': {"flops_per_second": 6.105e+10, "seconds_per_call": 0.006246, "jobs": 36},
    'inversion/dense': {"flops_per_second": 8.636e+10, "seconds_per_call": 0.0004091, "jobs": 81},
    'model/conv': {"flops_per_second": 1.211e+11, "seconds_per_call": 0.0102, "jobs": 17},
    'model/dense': {"flops_per_second": 7.997e+10, "seconds_per_call": 0.0007923, "jobs": 117},
    'transfer/fine-tune': {"flops_per_second": 8.753e+10, "seconds_per_call": 0.0001507, "jobs": 45},
    'transfer/fixed-feature': {"flops_per_second": 4.158e+10, "seconds_per_call": 0.0001711, "jobs": 144},
}
# a notebook's own code besides its jobs (imports, evaluation, plots): the median
# over the planned notebooks of wall time minus the seconds of the jobs it computed
NOTEBOOK_SECONDS = 50.0
