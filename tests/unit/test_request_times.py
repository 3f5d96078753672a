"""The request-time histogram of /metrics reads exactly as prometheus_client's own Histogram would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from training_controller.http import RequestTimes

NAME = "t_request_duration_seconds"
SUBJECTS = st.sampled_from(["model_status", "training_status", "train"])
TIMES = st.one_of(
    st.floats(min_value=0, max_value=30, allow_nan=False),
    st.sampled_from(Histogram.DEFAULT_BUCKETS[:-1]),  # exactly on a bound: counted in that bucket
)


def _samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


@given(st.lists(st.tuples(SUBJECTS, TIMES), max_size=60))
def test_the_histogram_says_what_prometheus_clients_histogram_says(observations):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    times = RequestTimes(NAME, "doc")
    ours.register(times)
    reference = Histogram(NAME, "doc", ["subject"], registry=theirs)
    for subject, seconds in observations:
        times.observe(subject, seconds)
        reference.labels(subject=subject).observe(seconds)
    assert _samples(ours) == _samples(theirs)
