"""Dynamic batching with a real, deliberately slow model (the Probe: column 0 = spin steps).

While one slow request occupies the model, the requests that arrive queue up; the
tests wait for the queue to hold them (read from /metrics), so which requests
share a forward pass is decided by the service, not by timing luck.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.inference.test_predict import metric_samples

# Long enough (about a second here) that the test's own requests reach the queue
# while it runs; nothing asserts how long it takes.
SLOW_STEPS = 8000


def gauge(client, name: str) -> float:
    return metric_samples(client.get("/metrics").text)[(name, ())]


def wait_for(client, name: str, value: float) -> None:
    for _ in range(10_000):
        if gauge(client, name) == value:
            return
        time.sleep(0.005)
    pytest.fail(f"{name} never reached {value}")


def start_slow_request(client, pool):
    future = pool.submit(client.post, "/predict", json={"inputs": [[SLOW_STEPS, 1]]})
    wait_for(client, "inference_forward_in_progress", 1)
    return future


def test_concurrent_requests_share_a_forward_and_get_their_own_rows(serve_cached):
    with serve_cached("probe", batch_max_wait_ms=0) as client, ThreadPoolExecutor(12) as pool:
        slow = start_slow_request(client, pool)
        rows = {i: [[0, i], [0, 100 + i]] if i % 2 else [[0, i]] for i in range(8)}
        futures = {
            i: pool.submit(client.post, "/predict", json={"inputs": r}) for i, r in rows.items()
        }
        invalid = pool.submit(client.post, "/predict", json={"inputs": [[0, "x"]]})
        wait_for(client, "inference_queue_depth", 8)
        results = {i: f.result() for i, f in futures.items()}
        assert slow.result().status_code == 200
        samples = metric_samples(client.get("/metrics").text)
    assert invalid.result().status_code == 422
    for i, response in results.items():
        assert response.status_code == 200
        expected = [[2.0 * a, 2.0 * b] for a, b in rows[i]]
        assert response.json()["outputs"] == expected
    # Two forward passes: the slow request alone, then the eight queued ones together.
    assert samples[("inference_batch_requests_count", ())] == 2
    assert samples[("inference_batch_requests_sum", ())] == 9
    assert samples[("inference_batch_examples_sum", ())] == 1 + 12


def test_a_failing_request_does_not_fail_its_batch_neighbours(serve_cached):
    with serve_cached("probe") as client, ThreadPoolExecutor(8) as pool:
        slow = start_slow_request(client, pool)
        good = [
            pool.submit(client.post, "/predict", json={"inputs": [[0, i]]}) for i in range(1, 4)
        ]
        wait_for(client, "inference_queue_depth", 3)
        poison = pool.submit(client.post, "/predict", json={"inputs": [[0, -5]]})
        wait_for(client, "inference_queue_depth", 4)
        slow.result()
        responses = [f.result() for f in good]
        failed = poison.result()
        samples = metric_samples(client.get("/metrics").text)
    assert failed.status_code == 500
    assert "negative input in column 1" in failed.json()["detail"]
    assert [r.json()["outputs"] for r in responses] == [[[0.0, 2.0]], [[0.0, 4.0]], [[0.0, 6.0]]]
    # slow alone, the failed batch of four, then each of the four on its own.
    assert samples[("inference_batch_requests_count", ())] == 1 + 1 + 4
    assert samples[("inference_forward_failures_total", ())] == 2


def test_batch_max_size_caps_examples_per_forward(serve_cached):
    with serve_cached("probe", batch_max_size=4) as client, ThreadPoolExecutor(8) as pool:
        slow = start_slow_request(client, pool)
        futures = [
            pool.submit(client.post, "/predict", json={"inputs": [[0, i], [0, i]]})
            for i in range(5)
        ]
        wait_for(client, "inference_queue_depth", 5)
        slow.result()
        assert all(f.result().status_code == 200 for f in futures)
        samples = metric_samples(client.get("/metrics").text)
    # 10 queued rows in pairs, at most 4 rows per pass: 2 + 2 + 1 requests.
    assert samples[("inference_batch_requests_count", ())] == 1 + 3
    assert samples[("inference_batch_examples_bucket", (("le", "4.0"),))] == 1 + 3


def test_max_wait_gathers_requests_until_the_batch_is_full(serve_cached):
    # A long wait that is never waited out: the fourth row fills the batch.
    with serve_cached("probe", batch_max_wait_ms=10_000, batch_max_size=4) as client:
        with ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(client.post, "/predict", json={"inputs": [[0, i]]}) for i in range(4)
            ]
            outputs = [f.result().json()["outputs"] for f in futures]
        samples = metric_samples(client.get("/metrics").text)
    assert outputs == [[[0.0, 2.0 * i]] for i in range(4)]
    assert samples[("inference_batch_requests_count", ())] == 1
    assert samples[("inference_batch_requests_sum", ())] == 4


def test_batching_off_runs_each_request_alone(serve_cached):
    with serve_cached("probe", batching=False) as client, ThreadPoolExecutor(8) as pool:
        slow = start_slow_request(client, pool)
        futures = [
            pool.submit(client.post, "/predict", json={"inputs": [[0, i]]}) for i in range(4)
        ]
        wait_for(client, "inference_queue_depth", 4)
        slow.result()
        outputs = [f.result().json()["outputs"] for f in futures]
        samples = metric_samples(client.get("/metrics").text)
    assert outputs == [[[0.0, 2.0 * i]] for i in range(4)]
    assert samples[("inference_batch_requests_count", ())] == 5
    assert samples[("inference_batch_requests_sum", ())] == 5


def test_full_queue_answers_503_overloaded(serve_cached):
    with serve_cached("probe", max_queued_requests=2) as client, ThreadPoolExecutor(8) as pool:
        slow = start_slow_request(client, pool)
        queued = [pool.submit(client.post, "/predict", json={"inputs": [[0, i]]}) for i in range(2)]
        wait_for(client, "inference_queue_depth", 2)
        refused = client.post("/predict", json={"inputs": [[0, 9]]})
        slow.result()
        assert all(f.result().status_code == 200 for f in queued)
    assert refused.status_code == 503
    assert refused.json()["status"] == "overloaded"
    assert refused.headers["retry-after"] == "1"


def test_probes_answer_while_the_model_is_busy(serve_cached):
    with serve_cached("probe") as client, ThreadPoolExecutor(4) as pool:
        busy = [
            pool.submit(client.post, "/predict", json={"inputs": [[SLOW_STEPS, 1]]})
            for _ in range(2)
        ]
        wait_for(client, "inference_forward_in_progress", 1)
        answered_while_busy = 0
        while not busy[-1].done():
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
            if not busy[-1].done():
                answered_while_busy += 1
        assert all(f.result().status_code == 200 for f in busy)
    # Had the forward blocked the event loop, no probe could have completed meanwhile.
    assert answered_while_busy >= 5


def test_stop_finishes_what_is_queued_then_refuses(artifacts):
    import asyncio
    from datetime import UTC, datetime

    import numpy as np

    from inference.batching import Batcher, ShuttingDown
    from inference.loader import load_module
    from inference.metrics import Metrics
    from inference.pointer import parse_pointer
    from inference.state import LoadedModel
    from tests.inference.conftest import pointer_for

    artifact = artifacts["probe"]
    pointer = parse_pointer(
        json.dumps(pointer_for(artifact, key="k", s3_version_id="v")), source="test"
    )
    model = LoadedModel(
        pointer, load_module(artifact.path, "torchscript"), artifact.path, datetime.now(UTC)
    )

    async def scenario():
        batcher = Batcher(
            model, Metrics(), enabled=True, max_examples=64, max_wait_seconds=0, max_queued=10
        )
        jobs = [
            asyncio.create_task(batcher.submit(np.array([[0, i]], dtype=np.float32)))
            for i in range(3)
        ]
        await asyncio.sleep(0)  # all three are queued before the worker exists
        batcher.start()
        stopped = await asyncio.to_thread(batcher.stop, 60)
        results = await asyncio.gather(*jobs)
        with pytest.raises(ShuttingDown):
            await batcher.submit(np.array([[0, 1]], dtype=np.float32))
        return stopped, results

    stopped, results = asyncio.run(scenario())
    assert stopped
    assert results == [f"[[0.0,{2.0 * i}]]".encode() for i in range(3)]
