"""Malformed payloads on every request/reply subject, against a real nats-server and an in-process service.

Every request gets an answer within 5 s. Subjects that parse JSON answer `{"error": "..."}` naming the field or
the problem; subjects that take opaque bytes answer as they always do. The service goes on serving afterwards.
The log directory is empty, so a `train` request that does validate queues a job that fails at once ("no log
documents") instead of training.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from tests.conftest import StartService, wait_until
from training_controller.bootstrap import Service
from training_controller.messages import PayloadError, TrainRequest, decode

NS = 10**9
VALID_INTERVAL = {"start_ts": 1_617_040_000 * NS, "end_ts": 1_617_040_600 * NS}
VALID_TRAIN = {"model_to_train": "nulog", "time_intervals": [VALID_INTERVAL]}
BIG = "x" * 1_000_000  # with its JSON around it, still under the server's 1 MiB max_payload

JSON_SUBJECTS = ("train", "train_model", "training_status", "training_jobs", "training_cancel")
OPAQUE_REPLIES = {
    "model_status": b"not started",
    "workload_parameters": b"{}",
    "gpu_service_inference": b"YES",
}


@pytest.fixture
async def service(start_service: StartService) -> Service:
    return await start_service()



def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def ask(nc: nats.NATS, subject: str, payload: bytes) -> bytes:
    """The reply, which must come within 5 s."""
    return (await nc.request(subject, payload, timeout=5)).data


def error_of(reply: bytes) -> str:
    """The message of an error reply; fails unless the reply is exactly {"error": "<non-empty text>"}."""
    body = json.loads(reply)
    assert isinstance(body, dict) and set(body) == {"error"}, reply[:300]
    assert isinstance(body["error"], str) and body["error"], reply[:300]
    return body["error"]


# (subject, payload, what the error must say after "invalid <subject> request: ")
JSON_CASES: list[tuple[str, bytes, str]] = [
    # train
    ("train", b"{oops", "payload is not valid JSON"),
    ("train", b"\xff\xfe\x00", "payload is not valid JSON"),
    ("train", b"[1, 2]", "payload must be a JSON object, not list"),
    ("train", b'"nulog"', "payload must be a JSON object, not str"),
    ("train", b"", "model_to_train: Field required; time_intervals: Field required"),
    ("train", b"{}", "model_to_train: Field required; time_intervals: Field required"),
    ("train", dumps({"time_intervals": [VALID_INTERVAL]}), "model_to_train: Field required"),
    ("train", dumps({"model_to_train": "nulog"}), "time_intervals: Field required"),
    ("train", dumps({**VALID_TRAIN, "model_to_train": 5}), "model_to_train: Input should be a valid string"),
    ("train", dumps({**VALID_TRAIN, "model_to_train": "gpt"}), "model_to_train: unknown model 'gpt'; this controller trains: nulog"),
    ("train", dumps({**VALID_TRAIN, "model_to_train": BIG}), "model_to_train: unknown model '" + "x" * 64 + "'"),
    ("train", dumps({"model_to_train": "nulog", "time_intervals": "all"}), "time_intervals: Input should be a valid list"),
    ("train", dumps({"model_to_train": "nulog", "time_intervals": []}), "time_intervals: List should have at least 1 item"),
    ("train", dumps({"model_to_train": "nulog", "time_intervals": [5]}), "time_intervals.0: Input should be a valid dictionary"),
    ("train", dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": 1}]}), "time_intervals.0.end_ts: Field required"),
    (
        "train",
        dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": "1", "end_ts": 2}]}),
        "time_intervals.0.start_ts: Input should be a valid integer",
    ),
    (
        "train",
        dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": 1.5, "end_ts": 2}]}),
        "time_intervals.0.start_ts: Input should be a valid integer",
    ),
    (
        "train",
        dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": -1, "end_ts": 2}]}),
        "time_intervals.0.start_ts: Input should be greater than or equal to 0",
    ),
    (
        "train",
        dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": 5, "end_ts": 5}]}),
        "time_intervals.0: start_ts (5) must be before end_ts (5)",
    ),
    (
        "train",
        dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": 10**40, "end_ts": 10**41}]}),
        "time_intervals.0.start_ts: Input should be less than or equal to 9223372036854775807",
    ),
    (
        "train",
        dumps({"model_to_train": "nulog", "time_intervals": [{}] * 100_000}),
        "time_intervals: List should have at most 1000 items after validation, not 100000",
    ),
    (
        "train",
        dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": i, "end_ts": i + 1} for i in range(30_000)]}),
        "time_intervals: List should have at most 1000 items after validation, not 30000",
    ),
    # train_model
    ("train_model", b"{oops", "payload is not valid JSON"),
    ("train_model", b"\xff", "payload is not valid JSON"),
    ("train_model", b"[]", "payload must be a JSON object, not list"),
    ("train_model", b'"web"', "payload must be a JSON object, not str"),
    ("train_model", b"null", "payload must be a JSON object, not NoneType"),
    ("train_model", dumps({"c1": "web"}), "c1: Input should be a valid dictionary"),
    ("train_model", dumps({"c1": {"ns": "nginx"}}), "c1.ns: Input should be a valid list"),
    ("train_model", dumps({"c1": {"ns": [5]}}), "c1.ns.0: Input should be a valid string"),
    ("train_model", dumps({"c1": {"ns": [10**40]}}), "c1.ns.0: Input should be a valid string"),
    ("train_model", dumps({"c1": {"ns": [""]}}), "c1.ns.0: String should have at least 1 character"),
    ("train_model", dumps({"c1": {"ns": [BIG]}}), "c1.ns.0: String should have at most 253 characters"),
    ("train_model", dumps({"c1": {"ns": ["d"] * 10_001}}), "c1.ns: List should have at most 10000 items after validation, not 10001"),
    ("train_model", dumps({"uuid": 5, "workloads": {"c1": {"ns": ["d"]}}}), "uuid: Input should be a valid string"),
    ("train_model", dumps({"uuid": BIG, "workloads": {"c1": {"ns": ["d"]}}}), "uuid: String should have at most 256 characters"),
    ("train_model", dumps({"workloads": "c1"}), "workloads: Input should be a valid dictionary"),
    # training_status / training_cancel (the same JobRequest)
    *[
        case
        for subject in ("training_status", "training_cancel")
        for case in [
            (subject, b"{oops", "payload is not valid JSON"),
            (subject, b"[]", "payload must be a JSON object, not list"),
            (subject, b"", "job_id: Field required"),
            (subject, dumps({"id": "abc123"}), "job_id: Field required"),
            (subject, dumps({"job_id": 5}), "job_id: Input should be a valid string"),
            (subject, dumps({"job_id": 10**40}), "job_id: Input should be a valid string"),
            (subject, dumps({"job_id": None}), "job_id: Input should be a valid string"),
            (subject, dumps({"job_id": ""}), "job_id: String should have at least 1 character"),
            (subject, dumps({"job_id": BIG}), "job_id: String should have at most 64 characters"),
            (subject, dumps({"job_id": "../etc"}), "job_id: String should match pattern '^[a-z0-9][a-z0-9-]*$'"),
        ]
    ],
    # training_jobs
    ("training_jobs", b"{oops", "payload is not valid JSON"),
    ("training_jobs", b"[]", "payload must be a JSON object, not list"),
    ("training_jobs", dumps({"limit": "ten"}), "limit: Input should be a valid integer, unable to parse string as an integer"),
    ("training_jobs", dumps({"limit": 1.5}), "limit: Input should be a valid integer, got a number with a fractional part"),
    ("training_jobs", dumps({"limit": 0}), "limit: Input should be greater than or equal to 1"),
    ("training_jobs", dumps({"limit": 10**40}), "limit: Input should be less than or equal to 1000"),
    ("training_jobs", dumps({"limit": BIG}), "limit: Input should be a valid integer"),
    ("training_jobs", dumps({"status": "sleeping"}), "status: Input should be 'queued', 'exporting', 'launching', 'running', 'succeeded', 'failed' or 'cancelled'"),
    ("training_jobs", dumps({"status": 5}), "status: Input should be 'queued'"),
]


def case_id(case: tuple[str, bytes, str]) -> str:
    subject, payload, _ = case
    shown = payload[:24].decode("ascii", "backslashreplace")
    return f"{subject}:{shown}{'...' if len(payload) > 24 else ''}({len(payload)}B)"


@pytest.mark.parametrize("case", JSON_CASES, ids=[case_id(c) for c in JSON_CASES])
async def test_a_malformed_json_request_is_answered_with_an_error_naming_the_problem(
    service: Service, nc: nats.NATS, case: tuple[str, bytes, str]
) -> None:
    subject, payload, problem = case

    message = error_of(await ask(nc, subject, payload))

    assert message.startswith(f"invalid {subject} request: "), message[:300]
    assert problem in message, message[:300]
    assert len(message) < 2_000  # says what is wrong without echoing the payload


OPAQUE_PAYLOADS = [b"", b"{oops", b"\xff\xfe\x00", b'{"job_id": 5}', b"[" * 100_000, BIG.encode()]


@pytest.mark.parametrize("subject", list(OPAQUE_REPLIES))
async def test_a_subject_taking_opaque_bytes_answers_its_normal_reply_to_any_payload(
    service: Service, nc: nats.NATS, subject: str
) -> None:
    for payload in OPAQUE_PAYLOADS:
        assert await ask(nc, subject, payload) == OPAQUE_REPLIES[subject], payload[:24]


async def test_after_a_barrage_of_malformed_requests_the_service_still_serves(service: Service, nc: nats.NATS) -> None:
    requests = [(subject, payload) for subject, payload, _ in JSON_CASES]
    requests += [(subject, payload) for subject in OPAQUE_REPLIES for payload in OPAQUE_PAYLOADS]

    replies = await asyncio.gather(*(ask(nc, subject, payload) for subject, payload in requests))

    for (subject, payload), reply in zip(requests, replies, strict=True):
        if subject in OPAQUE_REPLIES:
            assert reply == OPAQUE_REPLIES[subject]
        else:
            assert error_of(reply).startswith(f"invalid {subject} request: "), (subject, payload[:40], reply[:200])
    assert json.loads(await ask(nc, "training_status", b'{"job_id": "abc123"}')) == {"error": "no training job with id 'abc123'"}
    assert await ask(nc, "model_status", b"") == b"not started"  # the controller still answers
    assert json.loads(await ask(nc, "training_jobs", b"")) == {"jobs": [], "next": None}


async def test_a_malformed_train_message_published_without_reply_is_dropped_from_the_stream(
    service: Service, nc: nats.NATS
) -> None:
    js = nc.jetstream()
    await nc.publish("train", b"{oops")
    await nc.flush()

    info = await wait_until_delivered(js)

    assert (info.num_ack_pending, info.num_pending) == (0, 0)
    assert await ask(nc, "model_status", b"") == b"not started"  # the controller still answers


async def wait_until_delivered(js: Any, count: int = 1) -> Any:
    """The train consumer's info once it has taken `count` messages and had a moment to settle them."""
    for _ in range(100):
        info = await js.consumer_info("TRAINING_REQUESTS", "training-controller")
        if info.delivered.stream_seq >= count:
            await asyncio.sleep(0.5)
            return await js.consumer_info("TRAINING_REQUESTS", "training-controller")
        await asyncio.sleep(0.1)
    raise AssertionError("the train consumer never took the message")


# -- bugs --------------------------------------------------------------------------------------------------------

DEEP = b"[" * 100_000
MANY_DIGITS = b'{"limit": ' + b"1" * 5_000 + b"}"


@pytest.mark.parametrize("subject", JSON_SUBJECTS)
@pytest.mark.parametrize("payload", [DEEP, MANY_DIGITS], ids=["deeply-nested", "5000-digit-int"])
async def test_unparseable_json_beyond_the_parsers_limits_is_a_payload_error(
    service: Service, nc: nats.NATS, subject: str, payload: bytes
) -> None:
    message = error_of(await ask(nc, subject, payload))

    assert message.startswith(f"invalid {subject} request: payload is not valid JSON"), message


async def test_a_deeply_nested_train_message_is_dropped_from_the_stream(service: Service, nc: nats.NATS) -> None:
    js = nc.jetstream()
    await nc.publish("train", DEEP)
    await nc.flush()

    info = await wait_until_delivered(js)

    assert (info.num_ack_pending, info.num_pending) == (0, 0)


async def test_an_error_reply_is_sent_even_when_the_payload_makes_a_long_error(service: Service, nc: nats.NATS) -> None:
    key = "k" * 400_000
    payload = dumps({key: {"a": "x", "b": "y", "c": "z"}})
    assert len(payload) < 1_000_000

    message = error_of(await ask(nc, "train_model", payload))

    assert message.startswith("invalid train_model request: ")
    assert await ask(nc, "model_status", b"") == b"not started"  # the controller still answers


# -- property: any payload on any JSON subject ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)
loose = st.integers() | st.text(max_size=12) | st.none() | st.floats()
near_valid_train = st.fixed_dictionaries(
    {
        "model_to_train": st.sampled_from(["nulog", "NuLog", "", "nulog "]) | st.text(max_size=12) | st.integers(),
        "time_intervals": st.lists(
            st.just(VALID_INTERVAL)
            | st.fixed_dictionaries(
                {
                    "start_ts": st.integers(min_value=-(2**64), max_value=2**64) | loose,
                    "end_ts": st.integers(min_value=-(2**64), max_value=2**64) | loose,
                }
            ),
            max_size=3,
        )
        | loose,
    }
)
near_valid_workloads = st.dictionaries(
    st.text(max_size=8),
    st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=8) | st.integers(), max_size=3) | loose, max_size=2) | loose,
    max_size=2,
)
near_valid_jobs = st.fixed_dictionaries({}, optional={"status": st.sampled_from(["queued", "failed", "done"]) | loose, "limit": loose})
near_valid_job = st.fixed_dictionaries({}, optional={"job_id": st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,15}\Z") | loose})

payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_valid_train.map(lambda v: json.dumps(v).encode()),
    near_valid_workloads.map(lambda v: json.dumps(v).encode()),
    near_valid_jobs.map(lambda v: json.dumps(v).encode()),
    near_valid_job.map(lambda v: json.dumps(v).encode()),
)


def is_normal_reply(subject: str, reply: bytes) -> bool:
    """Whether `reply` is the subject's answer to a valid request."""
    if subject == "train_model":
        return reply in (b"model reset", b"training job submitted")
    try:
        body = json.loads(reply)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    if subject == "train":
        return set(body) == {"job_id", "status", "queue_position"} and body["status"] == "queued"
    if subject == "training_jobs":
        return set(body) == {"jobs", "next"} and isinstance(body["jobs"], list)
    return False  # training_status and training_cancel: no job exists whose id could be drawn


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=st.sampled_from(JSON_SUBJECTS), payload=payloads)
async def test_any_payload_on_a_json_subject_gets_an_error_or_the_normal_reply(
    service: Service, nc: nats.NATS, subject: str, payload: bytes
) -> None:
    reply = await ask(nc, subject, payload)

    if not is_normal_reply(subject, reply):
        message = error_of(reply)
        assert not message.startswith("internal error"), (subject, payload, message)
    elif subject in ("train", "train_model"):
        # An accepted training is under way (model_status says `training`) until it fails for want of logs.
        await wait_until(lambda: no_job_under_way(nc), timeout=60, what="the accepted training to end")
    assert await ask(nc, "model_status", b"") == b"not started"  # the controller still answers


async def no_job_under_way(nc: nats.NATS) -> bool:
    page = json.loads(await ask(nc, "training_jobs", b'{"limit": 1000}'))
    return all(job["phase"] in ("succeeded", "failed", "cancelled") for job in page["jobs"])


def test_the_near_valid_train_strategy_also_draws_payloads_that_validate() -> None:
    """So that the property above also sees `train` requests that are accepted."""

    def validates(value: dict) -> bool:
        try:
            decode(TrainRequest, json.dumps(value).encode())
        except PayloadError:
            return False
        return True

    found = find(near_valid_train, validates, settings=settings(database=None, max_examples=5_000))

    assert found["model_to_train"] == "nulog" and len(found["time_intervals"]) == 1
