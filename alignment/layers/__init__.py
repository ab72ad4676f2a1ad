"""Linear and Conv1d/2d/3d layers whose backward follows a learning rule."""

from alignment.layers.base import FeedbackLayer
from alignment.layers.conv import Conv1d, Conv2d, Conv3d, ConvLayer
from alignment.layers.conv_geometry import ConvGeometry
from alignment.layers.linear import Linear

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvGeometry", "ConvLayer", "FeedbackLayer", "Linear"]
