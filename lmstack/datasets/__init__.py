"""Datasets written for lmstack and shipped with it; `lmstack:NAME` names them (see `make_datasets.py`)."""
