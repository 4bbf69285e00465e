"""The cost model's rates (:mod:`stir_lib.jobs.cost`), fitted by
``benchmarks/cost_model.py calibrate --write`` on the cache entries of a cold ci build
(written by that script; do not edit by hand).
"""

__all__ = ["BUILD", "DATE", "MACHINE", "RATES", "NOTEBOOK_SECONDS"]

BUILD = '13b1819'          # the commit whose cold ci build was measured
DATE = '2026-12-06'
MACHINE = 'x86_64, 2 cores'
# family -> FLOP/s sustained, fixed seconds per forward/backward pass over a batch,
# and the number of jobs the fit saw (an infinite rate: the fit puts the family's
# time on its passes alone)
RATES = {
    'inversion/conv': {"flops_per_second": 5.107e+10, "seconds_per_call": 0.007829, "jobs": 36},
    'inversion/dense': {"flops_per_second": 6.027e+10, "seconds_per_call": 0, "jobs": 75},
    'model/conv': {"flops_per_second": float("inf"), "seconds_per_call": 0.01881, "jobs": 12},
    'model/dense': {"flops_per_second": 8.308e+10, "seconds_per_call": 0.001151, "jobs": 84},
    'transfer/fine-tune': {"flops_per_second": 1.217e+11, "seconds_per_call": 0.001572, "jobs": 45},
    'transfer/fixed-feature': {"flops_per_second": 3.544e+10, "seconds_per_call": 0.0003694, "jobs": 144},
}
# a notebook's own code besides its jobs (imports, evaluation, plots): the median
# over the planned notebooks of wall time minus the seconds of the jobs it computed
NOTEBOOK_SECONDS = 57.0
