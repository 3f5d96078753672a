"""NuLog: self-supervised log parsing and anomaly scoring with a masked-token transformer.

The package is kept apart from `training_controller` so that the controller never imports torch; the
training job (`python -m nulog.job`) and the `nulog` command are the only ways in from outside.
"""

from __future__ import annotations

import os

# Idle OpenMP workers of torch spin by default. On a small shared machine (the 2-core CI runners, a pod
# beside the controller) the spinning threads take the cores that the rest of the work needs; measured
# here, training became several times slower under load. Passive waiting costs nothing measurable.
# It only takes effect when nulog is imported before torch; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["ModelConfig", "ParseConfig", "TrainConfig"]

from nulog.config import ModelConfig, ParseConfig, TrainConfig
