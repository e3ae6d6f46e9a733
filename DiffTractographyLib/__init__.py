"""DiffTractographyLib: differentiable, batched diffusion-MRI tractography in PyTorch.

All public functions take and return RAS millimetres; affines map voxel indices to RAS mm.
Importing this package loads neither torch nor vtk: the names below are resolved on first use.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "InputError": "errors",
    "Tractogram": "streamlines",
    "load_tractogram": "io",
    "save_tractogram": "io",
    "TrackingParams": "config",
    "track": "tracking",
    "Tracker": "tracking",
    "ThresholdMap": "stopping",
    "SHField": "fields",
    "DWIField": "fields",
    "seeds_from_mask": "seeding",
    "read_seed_file": "seeding",
    "load_dwi": "dwi_io",
    "fit_dti": "models.dti",
    "fit_fod": "models.csd",
    "quickbundles": "clustering",
    "hierarchical_quickbundles": "clustering",
    "select_streamlines": "selection",
    "lesion_distances": "selection",
}

__all__ = sorted(_LAZY) + ["__version__"]


def unload() -> list[str]:
    """Forget this package's imported modules so that the next import reads their files again
    (Slicer's developer *Reload* calls it before reloading the module); returns their names. Objects
    made before keep their old classes."""
    import sys

    names = [name for name in sys.modules if name == __name__ or name.startswith(__name__ + ".")]
    for name in names:
        del sys.modules[name]
    return names


def lazy_attributes(package: str, names: dict[str, str], namespace: dict):
    """A module ``__getattr__`` for ``package`` that imports ``names``' submodule (name -> module,
    relative to ``package``) on first use and keeps the value in ``namespace`` (its ``globals()``)."""
    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(f".{names[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
