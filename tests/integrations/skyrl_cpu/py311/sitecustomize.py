"""Test environment only: lets skyrl 0.3.0 import on Python 3.11 (never part of the bandpo package).

skyrl 0.3.0 declares `requires-python >= 3.11` but does not import on 3.11: `skyrl/backends/__init__.py`
imports `skyrl/tinker/types.py`, whose pydantic models have `typing.TypedDict` fields, and pydantic refuses
`typing.TypedDict` before Python 3.12 ("Please use `typing_extensions.TypedDict`"). SkyRL's own CI runs 3.12;
this machine has 3.11 only. Python imports `sitecustomize` at start-up from the first `sys.path` entry that
has one, so with this directory on PYTHONPATH every process of a test run (pytest, the SkyRL driver, each Ray
worker, which inherit the environment) makes `typing.TypedDict` the `typing_extensions` one before SkyRL is
imported: the same class on 3.12, which pydantic accepts. Nothing else changes. On Python >= 3.12 it does
nothing.
"""

import sys

if sys.version_info < (3, 12):
    import typing

    import typing_extensions

    typing.TypedDict = typing_extensions.TypedDict
