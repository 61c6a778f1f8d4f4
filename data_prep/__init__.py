"""Data preparation: raw volumes (NIfTI / Analyze / DICOM) -> files the library reads.

`python -m data_prep.make_sample` rebuilds the embedded Colin27 sample in medsr_jax/data/sample/.
"""
