"""Reading Prometheus text exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[tuple, float]:
    """{(sample name, *label values in the order written): value}"""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, *sample.labels.values())] = sample.value
    return samples
