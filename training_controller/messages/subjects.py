"""The NATS subjects of the wire contract and the plain-text GPU messages Opni's services exchange."""

from __future__ import annotations


class Subjects:
    """The NATS subjects of the wire contract."""

    TRAIN = "train"
    TRAIN_MODEL = "train_model"
    MODEL_STATUS = "model_status"
    WORKLOAD_PARAMETERS = "workload_parameters"
    GPU_SERVICE_INFERENCE = "gpu_service_inference"
    GPU_SERVICE_INFERENCE_INTERNAL = "gpu_service_inference_internal"
    GPU_SERVICE_RUNNING = "gpu_service_running"
    GPU_TRAININGJOB_STATUS = "gpu_trainingjob_status"
    MODEL_WORKLOAD_PARAMETERS = "model_workload_parameters"
    MODEL_UPDATE = "model_update"
    MODEL_READY = "model_ready"
    TRAINING_STATUS = "training_status"
    TRAINING_JOBS = "training_jobs"
    TRAINING_CANCEL = "training_cancel"
    TRAINING_LOGS = "training_logs"  # training_logs.<job>
    # Answered by the inference worker (`nulog serve`), asked by the controller's /api/v1/predict. Not
    # gpu_service_running: that one is Opni's GPU inference service's, and answering it would make the
    # controller grant the GPU to batches nobody consumes.
    NULOG_PREDICT = "nulog_predict"

    @staticmethod
    def training_logs(job_id: str) -> str:
        return f"training_logs.{job_id}"


CONTROLLER_HEADER = "Training-Controller"
JOB_START = b"JobStart"
JOB_END = b"JobEnd"
JOB_RESET = b"JobReset"  # every external claim on the GPU is void (Opni: after GPU_TRAINING_RESET_TIME)
