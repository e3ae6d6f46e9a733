"""``difftract batch``: a BIDS dataset through fit -> track -> cluster on Dask distributed.

``bids`` indexes the participants (bids2table), ``graph`` is one participant's task graph (the
``difftract`` commands as Dask tasks), ``outputs`` the BIDS-Derivatives (names, atomic writes, the
sidecar that marks completion), ``runner`` sorts and runs the participants, ``cluster`` starts the
Dask cluster and compiles the kernels first, ``report`` the group table, ``phantom_dataset`` a
small generated dataset. Importing this package loads neither Dask nor torch.
"""
