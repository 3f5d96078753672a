"""A job's parameters and workers, as `training-controller status` and /metrics show them."""

from __future__ import annotations

from training_controller.client import describe_job
from training_controller.core.jobs import JobPhase, JobRecord, WorkerInfo
from training_controller.core.records import RecordIndex
from training_controller.http import Metrics


def running_with_workers() -> JobRecord:
    record = JobRecord.new(job_id="j1", seq=1, parameters={"workers": 2, "epochs": 3, "k": None})
    record = record.advance(JobPhase.EXPORTING, "x").advance(JobPhase.LAUNCHING, "x").advance(JobPhase.RUNNING, "training")
    return record.evolve(workers=(
        WorkerInfo(index=0, role="master", name="pid 101", state="running"),
        WorkerInfo(index=1, role="worker", name="pid 102", state="failed", message="exit code 1: out of memory"),
    ))


def test_status_shows_the_parameters_in_force_and_each_worker() -> None:
    text = describe_job(running_with_workers().to_json())

    assert "  parameters: workers=2, epochs=3" in text
    assert "  worker 0 (master, pid 101): running" in text
    assert "  worker 1 (worker, pid 102): failed - exit code 1: out of memory" in text


def test_metrics_count_the_workers_of_trainings_under_way_by_state() -> None:
    metrics = Metrics()

    index = RecordIndex()
    index.put(running_with_workers())
    metrics.refresh(index.totals(), gpu_busy=True)

    lines = metrics.render().decode().splitlines()
    assert 'training_controller_workers{state="running"} 1.0' in lines
    assert 'training_controller_workers{state="failed"} 1.0' in lines
    assert 'training_controller_workers{state="pending"} 0.0' in lines
