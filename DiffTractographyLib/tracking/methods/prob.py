"""Probabilistic tracking on DIPY's pmf (``ProbabilisticDirectionGetter``: the next direction is
drawn from the thresholded pmf within ``max_angle``), sampled by Gumbel-max so that the draw has a
reparameterised relaxation."""
from __future__ import annotations

import torch

from ... import rng
from ..algorithms import ALGORITHMS, TEMPERATURE
from .pmf import PmfMethod


class Probabilistic(PmfMethod):
    """Draws vertex i with probability proportional to its pmf among the admissible vertices
    (|cos| >= cos(max_angle), DIPY's inclusive cone) as argmax(log pmf_i + g_i), g_i standard Gumbel:
    an exact categorical draw (another random stream than DIPY's inverse CDF). The uniforms behind g
    depend only on (rng_seed, seed index, branch, step), so runs repeat across chunk sizes and devices
    and a checkpointed backward pass redraws the same vertices. Gradients: straight-through
    Gumbel-softmax at ``temperature`` (see ``pmf``)."""

    algorithm = ALGORITHMS["prob"]

    def __init__(self, field, cutoff, max_angle, rng_seed: int = 0, sphere=None,
                 temperature: float = TEMPERATURE, relaxed: bool = False, dtype=torch.float32):
        super().__init__(field, cutoff, max_angle, sphere=sphere, temperature=temperature, relaxed=relaxed,
                         dtype=dtype)
        self.rng_seed = rng_seed

    @classmethod
    def from_params(cls, field, params, dtype):
        return cls(field, params.cutoff, params.max_angle, rng_seed=params.rng_seed, dtype=dtype)

    def noise(self, key, vertices):
        """Gumbel noise at ``vertices`` for ``key`` = (seed index, branch, step): the uniform of
        vertex i is draw i of stream (step + 1) * 2**16 + branch, distinct for steps below 65535 and
        branches below 65536."""
        if key is None:
            raise ValueError("probabilistic steps need random-draw keys: track through track(), or pass keys to propagate()")
        seeds, branch, step = key
        u = rng.uniform(self.rng_seed, seeds, ((step + 1) << 16) + branch, vertices)
        return (-torch.log(-torch.log(u))).to(self.vertices.dtype)

    def choose(self, values, outside, top, noise):
        admissible = self.admissible(values, outside, top)
        logits = torch.log(torch.where(admissible, values, torch.ones_like(values))) + noise
        return logits.masked_fill(~admissible, -torch.inf).argmax(-1), admissible.any(-1)
