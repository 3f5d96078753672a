"""Wire payloads: decoding valid requests, rejecting bad ones with the field named, and encoding replies."""

from __future__ import annotations

import json

import pytest

from training_controller.core.queries import Interval, LogQuery
from training_controller.messages import (
    MAX_INTERVALS,
    MAX_NS,
    ErrorReply,
    JobRequest,
    JobsRequest,
    PayloadError,
    TrainAccepted,
    TrainRequest,
    decode,
    encode,
)


def _train(intervals=None, model="nulog") -> bytes:
    if intervals is None:
        intervals = [{"start_ts": 1_000, "end_ts": 2_000}]
    return json.dumps({"model_to_train": model, "time_intervals": intervals}).encode()


def test_valid_train_request_decodes():
    request = decode(TrainRequest, _train([{"start_ts": 1, "end_ts": 2}, {"start_ts": 5, "end_ts": MAX_NS}]))

    assert isinstance(request, TrainRequest)
    assert request.model_to_train == "nulog"
    assert [(i.start_ts, i.end_ts) for i in request.time_intervals] == [(1, 2), (5, MAX_NS)]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "payload is not valid JSON"),
        (b"\xff\xfe\x00", "payload is not valid JSON"),
        (b"[1, 2]", "payload must be a JSON object, not list"),
        (b'"text"', "payload must be a JSON object, not str"),
        (b"42", "payload must be a JSON object, not int"),
    ],
)
def test_payload_that_is_not_a_json_object_is_rejected(payload: bytes, expected: str):
    with pytest.raises(PayloadError, match=expected):
        decode(TrainRequest, payload)


@pytest.mark.parametrize(
    ("payload", "field", "says"),
    [
        (
            json.dumps({"model_to_train": 5, "time_intervals": [{"start_ts": 1, "end_ts": 2}]}).encode(),
            "model_to_train",
            "valid string",
        ),
        (json.dumps({"model_to_train": "nulog", "time_intervals": "x"}).encode(), "time_intervals", "valid list"),
        (_train([{"start_ts": "1", "end_ts": 2}]), "time_intervals.0.start_ts", "valid integer"),
        (_train([{"start_ts": 1.5, "end_ts": 2}]), "time_intervals.0.start_ts", "valid integer"),
        (_train([{"start_ts": 5, "end_ts": 5}]), "time_intervals.0", "start_ts (5) must be before end_ts (5)"),
        (_train([{"start_ts": 1, "end_ts": 2}, {"start_ts": 9, "end_ts": 3}]), "time_intervals.1", "must be before"),
        (_train([]), "time_intervals", "at least 1 item"),
        (_train(model=""), "model_to_train", "at least 1 character"),
        (_train([{"start_ts": True, "end_ts": 2}]), "time_intervals.0.start_ts", "valid integer"),
        (_train([{"start_ts": 1, "end_ts": False}]), "time_intervals.0.end_ts", "valid integer"),
        (_train([{"start_ts": 1}]), "time_intervals.0.end_ts", "Field required"),
        (json.dumps({"time_intervals": [{"start_ts": 1, "end_ts": 2}]}).encode(), "model_to_train", "Field required"),
        (_train([{"start_ts": 1, "end_ts": MAX_NS + 1}]), "time_intervals.0.end_ts", "less than or equal to"),
        (_train([{"start_ts": -1, "end_ts": 2}]), "time_intervals.0.start_ts", "greater than or equal to 0"),
        (_train([{"start_ts": 1, "end_ts": 2}] * (MAX_INTERVALS + 1)), "time_intervals", f"at most {MAX_INTERVALS}"),
    ],
)
def test_malformed_train_request_names_the_field(payload: bytes, field: str, says: str):
    with pytest.raises(PayloadError) as info:
        decode(TrainRequest, payload)

    message = str(info.value)
    assert f"{field}: " in message
    assert says in message
    assert "Value error" not in message


def test_every_problem_is_named_in_one_message():
    payload = json.dumps({"model_to_train": 7, "time_intervals": [{"start_ts": True}]}).encode()

    with pytest.raises(PayloadError) as info:
        decode(TrainRequest, payload)

    message = str(info.value)
    fields = ["model_to_train: Input should be a valid string", "time_intervals.0.start_ts: ", "time_intervals.0.end_ts: Field required"]
    positions = [message.index(f) for f in fields]
    assert positions == sorted(positions)


def test_exactly_max_intervals_is_accepted():
    request = decode(TrainRequest, _train([{"start_ts": 1, "end_ts": 2}] * MAX_INTERVALS))

    assert len(request.time_intervals) == MAX_INTERVALS


@pytest.mark.parametrize("payload", [b"", b"  \n", b"{}"])
def test_empty_payload_decodes_a_model_whose_fields_all_have_defaults(payload: bytes):
    request = decode(JobsRequest, payload)

    assert request == JobsRequest(status=None, limit=20)


@pytest.mark.parametrize("payload", [b"", b"{}"])
def test_empty_payload_names_the_missing_fields_of_a_model_that_needs_them(payload: bytes):
    with pytest.raises(PayloadError, match=r"^job_id: Field required$"):
        decode(JobRequest, payload)


def test_empty_train_request_names_both_missing_fields():
    with pytest.raises(PayloadError, match=r"^model_to_train: Field required; time_intervals: Field required$"):
        decode(TrainRequest, b"")


def test_jobs_request_with_unknown_status_is_rejected():
    with pytest.raises(PayloadError, match=r"^status: "):
        decode(JobsRequest, b'{"status": "bogus"}')


def test_jobs_request_with_status_filter_decodes_to_the_phase():
    request = decode(JobsRequest, b'{"status": "running", "limit": 5}')

    assert request.status == "running" and request.limit == 5


@pytest.mark.parametrize("job_id", ["a b", "*", ">", "jobs.*", "ABC", "-leading", "", "x" * 65, "abc\n"])
def test_job_request_rejects_ids_that_are_not_plain_tokens(job_id: str):
    with pytest.raises(PayloadError, match=r"^job_id: "):
        decode(JobRequest, json.dumps({"job_id": job_id}).encode())


@pytest.mark.parametrize("job_id", ["abc-123", "0f3a9c2b7d1e", "x" * 64])
def test_job_request_accepts_plain_ids(job_id: str):
    assert decode(JobRequest, json.dumps({"job_id": job_id}).encode()).job_id == job_id


def test_train_request_to_query_maps_intervals():
    request = decode(TrainRequest, _train([{"start_ts": 10, "end_ts": 20}, {"start_ts": 30, "end_ts": 40}]))

    query = request.to_query()

    assert isinstance(query, LogQuery)
    assert query.intervals == (Interval(start_ns=10, end_ns=20), Interval(start_ns=30, end_ns=40))
    assert query.workloads == () and query.max_documents is None


def test_encode_model_as_json():
    data = encode(TrainAccepted(job_id="abc", queue_position=2))

    assert json.loads(data) == {"job_id": "abc", "status": "queued", "queue_position": 2}


def test_encode_error_reply_round_trips():
    data = encode(ErrorReply(error="time_intervals: bad"))

    assert decode(ErrorReply, data) == ErrorReply(error="time_intervals: bad")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Compact UTF-8 JSON, as pydantic writes the models.
        ({"a": 1, "b": [True, None]}, b'{"a":1,"b":[true,null]}'),
        ([1, "x"], b'[1,"x"]'),
        ({"caf\u00e9": ["\u00fc"]}, '{"caf\u00e9":["\u00fc"]}'.encode()),
        ("JobStart", b"JobStart"),
        ("caf\u00e9", "caf\u00e9".encode()),
        (b"\x00raw", b"\x00raw"),
    ],
)
def test_encode_values(value, expected: bytes):
    assert encode(value) == expected
