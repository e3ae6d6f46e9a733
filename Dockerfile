# difftract as a container: the BIDS App `difftract batch`, the Dask worker of its clusters, and
# every other difftract command.
#
#   docker build -t difftract .                                  # CPU
#   docker build -t difftract:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 \
#                --build-arg EXTRAS=batch,cuda .                 # NVIDIA GPUs (run with --gpus all)
#   docker run --rm -v /data:/data difftract batch /data/bids /data/bids/derivatives/difftract participant
#   apptainer build difftract.sif docker-daemon://difftract:latest   # for SLURM (docs/batch-slurm.yaml)
ARG PYTHON=3.11
FROM python:${PYTHON}-slim

ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=batch

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    NUMBA_CACHE_DIR=/opt/numba-cache

WORKDIR /opt/difftractography
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH}"
COPY pyproject.toml README.md LICENSE.txt ./
COPY DiffTractographyLib ./DiffTractographyLib
RUN pip install ".[${EXTRAS}]"

# Compile the CPU tracking kernels of every algorithm into numba's cache in the image, so that no
# worker spends 20-30 s compiling them. Numba recompiles (into NUMBA_CACHE_DIR, which must then be
# writable: set it to a shared folder under a read-only Apptainer image) on a CPU model other than
# the build machine's.
RUN python -c "from DiffTractographyLib.batch.cluster import compile_kernels; \
from DiffTractographyLib.batch.graph import Options; \
[print(compile_kernels(Options(a), False)) for a in ('sdstream', 'tensordet', 'detmax', 'prob')]" \
    && chmod -R a+rwX /opt/numba-cache

WORKDIR /work
ENTRYPOINT ["difftract"]
CMD ["batch", "--help"]
