"""edged: streaming edge inference for spiking neural networks.

Importing the package is cheap: Numba, onnxruntime and ZeroMQ are imported only by
the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: the packages whose versions ``edged --version``, model provenance and ``edged_build_info`` report
PACKAGES = ("edged", "numpy", "numba", "onnx", "onnxruntime", "pyzmq", "msgpack", "prometheus-client")


def versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package in ``names``; ``"not installed"`` where absent."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
