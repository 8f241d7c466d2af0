"""Batched SpykeTorch-style convolutional spiking primitives and learning rules.

Modules: `functional` (wave primitives), `filters`, `encoding`, `layers`, `learning`, `times`
(the compact first-spike-time representation), `engine` (the training engine's search-based
fast paths), `visualization` and `parallel` (data-parallel learning over torch.distributed).
This package imports nothing from the models or the trainer.
"""
from . import encoding, engine, filters, functional, layers, learning, parallel, times, visualization
from .encoding import Intensity2Latency, intensity_to_latency
from .filters import DoGKernel, Filter, GaborKernel
from .layers import Convolution, Pooling
from .learning import RSTDP, STDP

__all__ = ["encoding", "engine", "filters", "functional", "layers", "learning", "parallel", "times",
           "visualization",
           "Intensity2Latency", "intensity_to_latency", "DoGKernel", "Filter", "GaborKernel",
           "Convolution", "Pooling", "RSTDP", "STDP"]
