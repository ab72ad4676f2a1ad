"""Linear and Conv2d layers whose backward follows a learning rule."""

from alignment.layers.base import FeedbackLayer
from alignment.layers.conv import Conv2d
from alignment.layers.conv_geometry import ConvGeometry
from alignment.layers.linear import Linear

__all__ = ["Conv2d", "ConvGeometry", "FeedbackLayer", "Linear"]
