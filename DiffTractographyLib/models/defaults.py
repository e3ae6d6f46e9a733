"""The fits' default settings, importable without torch (``difftract fit --help`` shows them)."""
#: DTI: the log-signal least-squares methods; the smallest signal kept in the log (DIPY's MIN_POSITIVE_SIGNAL)
METHODS = ("WLS", "OLS")
MIN_SIGNAL = 1e-4
#: CSD (DIPY's defaults): FA above which voxels are single-fibre for the response, the half-width in
#: voxels of the central cube searched for it, the constraint threshold (x mean amplitude), its weight
#: and the iterations of the constrained fit
FA_THRESHOLD = 0.7
ROI_RADII = 10
TAU = 0.1
LAMBDA = 1.0
MAX_ITER = 50
