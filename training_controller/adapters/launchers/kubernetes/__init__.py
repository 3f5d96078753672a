"""The `kubernetes` launcher: each training as a batch/v1 Job `nulog-train-<job>`, with GPUs.

One worker is one pod; several workers are an Indexed Job with a headless Service for the rendezvous at
index 0. The package's parts, each usable alone:

    manifest.py   the Job, pod and Service bodies: pure functions of the job spec, the settings and MinIO's
    api.py        the blocking API calls, returning the server's JSON (run in threads)
    errors.py     the one translation of API and connection errors into the core's errors
    follower.py   the threads that follow a training, and their typed messages
    pods.py       which worker a pod is, how it stands, which one failed
    story.py      those messages in the port's words: output lines, worker states, the failure
    launcher.py   the port: launch, events, cancel, list; shared with the `kubeflow` launcher
"""

from training_controller.adapters.launchers.kubernetes.launcher import (
    ClusterLauncher,
    KubernetesLauncher,
    job_state,
)
from training_controller.adapters.launchers.kubernetes.manifest import (
    JOB_PREFIX,
    job_manifest,
    job_name,
    service_manifest,
)

__all__ = [
    "JOB_PREFIX",
    "ClusterLauncher",
    "KubernetesLauncher",
    "job_manifest",
    "job_name",
    "job_state",
    "service_manifest",
]
