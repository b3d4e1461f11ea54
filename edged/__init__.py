"""edged: streaming edge inference for spiking neural networks.

Importing the package is cheap: Numba, onnxruntime and ZeroMQ are imported only by
the modules that need them.
"""

__version__ = "0.1.0"
