"""omnipose: pose-agnostic visual anomaly detection on 3D objects (OmniposeAD line).

The package reads in the order data flows: ``core`` (errors, files, configs, geometry, images)
-> ``data`` -> ``nerf`` -> ``pose`` -> ``compare`` -> ``detector`` -> ``evaluation`` -> ``cli``;
each imports only from those before it. Start with ``omnipose.detector.Detector``.
"""
from omnipose import _legacy

__version__ = "0.2.0"

_legacy.install()
