"""Group commit: each caller gets its own outcome; concurrent callers share batches."""

import threading
import time

import pytest

from shared.group_commit import GroupCommit


def run_concurrently(count, target):
    results = [None] * count
    errors = [None] * count

    def call(n):
        try:
            results[n] = target(n)
        except Exception as exc:
            errors[n] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    return results, errors


def test_a_lone_caller_writes_its_own_batch():
    batches = []
    group = GroupCommit(lambda items: batches.append(list(items)) or [i * 2 for i in items])
    assert group.submit(21) == 42
    assert group.submit(5) == 10
    assert batches == [[21], [5]]


def test_concurrent_callers_share_batches_and_each_gets_its_own_outcome():
    batches = []

    def write(items):
        batches.append(list(items))
        time.sleep(0.02)  # a slow commit: the others queue meanwhile
        return [f"done {item}" for item in items]

    group = GroupCommit(write)
    results, errors = run_concurrently(40, group.submit)
    assert errors == [None] * 40
    assert results == [f"done {n}" for n in range(40)]
    assert sorted(item for batch in batches for item in batch) == list(range(40))
    assert len(batches) < 40  # grouped
    assert max(len(batch) for batch in batches) > 1


def test_an_outcome_that_is_an_error_goes_to_its_caller_alone():
    group = GroupCommit(lambda items: [ValueError(i) if i % 2 else i for i in items])
    results, errors = run_concurrently(10, group.submit)
    for n in range(10):
        if n % 2:
            assert isinstance(errors[n], ValueError) and results[n] is None
        else:
            assert errors[n] is None and results[n] == n


def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs():
    calls = []

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return list(items)

    group = GroupCommit(write)
    with pytest.raises(RuntimeError, match="went away"):
        group.submit(1)
    assert group.submit(2) == 2
