"""Latency distributions for the fleet stand-in (``--fleet-latency SPEC``).

Grammar, all numbers in seconds (decimals allowed, spaces ignored)::

    fixed:S            every prediction takes S seconds            (fixed:3)
    uniform:A,B        uniformly between A and B, A <= B           (uniform:2,5)
    lognormal:M,SIGMA  log-normal with median M and shape SIGMA    (lognormal:3,0.5)

SIGMA is the standard deviation of the underlying normal: ``lognormal:3,0.5`` puts about 95 % of
predictions between 1.1 s and 8 s, with a long tail above, as real model latencies have.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

GRAMMAR = "fixed:S | uniform:A,B | lognormal:MEDIAN,SIGMA (seconds), e.g. lognormal:3,0.5"
_ARITY = {"fixed": 1, "uniform": 2, "lognormal": 2}


@dataclass(frozen=True)
class Latency:
    kind: str
    params: tuple[float, ...]

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.params[0]
        if self.kind == "uniform":
            low, high = self.params
            return rng.uniform(low, high)
        median, sigma = self.params
        return rng.lognormvariate(math.log(median), sigma)

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(f'{p:g}' for p in self.params)}"


def parse_latency(spec: str) -> Latency:
    """The distribution in ``spec``; raises ValueError naming the grammar on anything else."""
    kind, sep, rest = spec.replace(" ", "").partition(":")
    kind = kind.lower()
    if not sep or kind not in _ARITY:
        raise ValueError(f"invalid latency {spec!r}; expected {GRAMMAR}")
    try:
        params = tuple(float(part) for part in rest.split(","))
    except ValueError:
        raise ValueError(f"invalid latency {spec!r}; expected {GRAMMAR}") from None
    if len(params) != _ARITY[kind] or not all(math.isfinite(p) and p >= 0 for p in params):
        raise ValueError(f"invalid latency {spec!r}; expected {GRAMMAR} with finite numbers >= 0")
    if kind == "uniform" and params[0] > params[1]:
        raise ValueError(f"invalid latency {spec!r}: uniform needs A <= B")
    if kind == "lognormal" and params[0] <= 0:
        raise ValueError(f"invalid latency {spec!r}: the lognormal median must be above 0")
    return Latency(kind, params)
