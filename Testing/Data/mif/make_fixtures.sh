#!/usr/bin/env bash
# Regenerates the MRtrix3 image fixtures of this folder from asym.nii, mask.nii and dwi.nii.gz
# (written by make_sources.py) with MRtrix3 3.0.3's mrconvert (Debian's mrtrix3 package).
set -euo pipefail
cd "$(dirname "$0")"
q="-quiet -force"
mrconvert $q asym.nii asym_strides.mif -strides -2,3,-1,4          # permuted, two axes reversed
mrconvert $q asym.nii asym_volumes_first.mif -strides 2,3,4,1      # channel fastest, as MRtrix3 stores FODs
mrconvert $q asym.nii asym.mif.gz
mrconvert $q asym.nii asym.mih                                     # header + asym.dat
mrconvert $q asym.nii asym_int16_scaled.mif -datatype int16 -scaling 10,0.5
mrconvert $q asym.nii asym_float64be.mif -datatype float64be
mrconvert $q mask.nii mask_bit.mif -datatype bit
mrconvert $q dwi.nii.gz dwi.mif -fslgrad dwi.bvec dwi.bval -strides -1,2,3,4
# the DWI permuted and reversed on disk, with the FSL table MRtrix3 exports for that storage order
mrconvert $q dwi.mif dwi_permuted.mif -strides 2,-1,3,4 -export_grad_fsl dwi_permuted.bvec dwi_permuted.bval
