"""NuLog: self-supervised log parsing and anomaly scoring with a masked-token transformer.

The package is kept apart from `training_controller` so that the controller never imports torch; the
training job (`python -m nulog.job`) and the `nulog` command are the only ways in from outside.
"""

from __future__ import annotations

__all__ = ["NuLogConfig"]

from nulog.config import NuLogConfig
