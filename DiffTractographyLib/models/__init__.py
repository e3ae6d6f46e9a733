"""Signal models fitted in torch, batched over voxels and differentiable with respect to the signal:
``dti`` (diffusion tensor) and ``csd`` (constrained spherical deconvolution)."""
