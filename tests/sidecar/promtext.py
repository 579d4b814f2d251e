"""A strict reader of the Prometheus text exposition format (0.0.4), for tests."""

from __future__ import annotations

import re

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    """(type of each metric family, value of each sample by (name, labels)).

    Raises AssertionError on anything malformed: a sample before its TYPE,
    a bad label set, a value that is not a float, a duplicate sample."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"TYPE given twice: {line}"
            types[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"malformed sample line: {line!r}"
        name, _, raw_labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample before its TYPE: {line!r}"
        labels = []
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = _LABEL.match(raw_labels, pos)
                assert lm, f"malformed labels: {raw_labels!r}"
                labels.append((lm.group(1), lm.group(2)))
                pos = lm.end()
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample: {line!r}"
        samples[key] = float(value)
    return types, samples


def value(samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None."""
    return samples.get((name, frozenset(labels.items())))
