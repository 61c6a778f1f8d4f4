"""Data preparation: raw volumes (NIfTI / Analyze / DICOM) -> files the library reads.

`python -m data_prep.build --dataset=... --src=DIR --out=DIR` turns OASIS-1, BraTS, ACDC,
COVID-CT (both published layouts) or any folder of volumes into TFRecord shards of preprocessed
2-D slices with the thesis' protocols (see data_prep/build.py; the shard directory format is
`medsr_jax.data.manifest`).

`python -m data_prep.make_sample` rebuilds the embedded Colin27 sample in medsr_jax/data/sample/.

Tests: `.venv/bin/python -m pytest -q tests/test_data_prep.py tests/test_data_prep_bad.py
tests/test_data_prep_folder.py tests/test_sample.py`.
"""
