"""Opni-compatible training controller for the NuLog log-anomaly model.

The controller is an asyncio NATS service; it never imports torch. The model itself lives in the sibling
package `nulog`, which the controller only ever runs as a separate process (a Kubernetes Job or a local
subprocess).
"""

__version__ = "0.1.0"
