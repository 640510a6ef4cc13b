"""The package version, the single source read by `bandpo.__version__`, the CLI and the build (pyproject.toml).

No imports here: `bandpo --version` and the build read this file without pulling in torch.
"""

__version__ = "0.1.0"
