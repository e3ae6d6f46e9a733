"""Surgical planning on a tractogram: density maps (``density``), signed distance to a lesion
(``distance``), the uncertainty envelope of a bundle (``envelope``) and seeds placed by gradient
(``seeds``). RAS mm throughout."""
