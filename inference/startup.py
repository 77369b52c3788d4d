"""Startup in the background: resolve the pointer, fetch and verify the artifact, load it.

Runs on its own thread, started by the app's lifespan once the server is
listening, so ``/healthz`` answers from the first moment. Each phase is logged
as one structured line with its duration (and size, where there is one). A
permanent failure ends startup with exactly one ERROR line naming the cause;
the process stays up and ``/readyz`` keeps answering 503 with that reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from inference.aws import RetryPolicy, Stopped, read_parameter, s3_client, ssm_client
from inference.cache import CachedFile, ModelCache, file_sha256
from inference.config import Settings
from inference.download import download_object
from inference.errors import StartupFailure
from inference.loader import load_module, warm_up
from inference.metrics import Metrics
from inference.pointer import Pointer, parse_pointer
from inference.state import LoadedModel, ModelState, Phase

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient

logger = logging.getLogger(__name__)


class Startup:
    """One attempt to bring the pointed-to model up; call :meth:`run` on a thread."""

    def __init__(
        self,
        settings: Settings,
        state: ModelState,
        metrics: Metrics,
        *,
        on_ready: Callable[[LoadedModel], None],
        ssm: SSMClient | None = None,
        s3: S3Client | None = None,
    ) -> None:
        """``ssm`` and ``s3`` are the clients to use; by default built from ``settings``
        when first needed (a pointer from MODEL_POINTER never builds an SSM client)."""
        self.settings = settings
        self.ssm = ssm
        self.s3 = s3
        self.state = state
        self.metrics = metrics
        self.on_ready = on_ready
        self.stop = threading.Event()
        self.policy = RetryPolicy.from_settings(settings, self.stop)

    def run(self) -> None:
        """Thread target: bring the model up, or record why it cannot be; never raises."""
        started = time.perf_counter()
        try:
            model = self.bring_up()
            if self.stop.is_set():
                raise Stopped()
            self.on_ready(model)
        except Stopped:
            logger.info("startup abandoned: shutting down", extra={"event": "startup_stopped"})
            return
        except StartupFailure as failure:
            self.state.fail(failure.cause, failure.message)
            logger.error(
                "model not served: %s",
                failure.message,
                extra={"event": "startup_failed", "cause": failure.cause},
            )
            return
        except Exception as exc:
            # A bug, not a property of the artifact; still one line, with the traceback
            # inside the JSON document.
            message = f"internal error during startup: {type(exc).__name__}: {exc}"
            self.state.fail("internal_error", message)
            logger.exception(
                "model not served: %s",
                message,
                extra={"event": "startup_failed", "cause": "internal_error"},
            )
            return
        logger.info(
            "ready: serving %s %s",
            model.pointer.model,
            model.pointer.version,
            extra={
                "event": "startup_ready",
                "model": model.pointer.model,
                "version": model.pointer.version,
                "sha256": model.pointer.sha256,
                "duration_s": round(time.perf_counter() - started, 4),
            },
        )

    def bring_up(self) -> LoadedModel:
        """Return the verified, loaded and warmed-up model; raise StartupFailure or Stopped."""
        with self._phase(Phase.RESOLVING, "resolving the model pointer", name="resolve"):
            pointer = self.resolve_pointer()
        logger.info(
            "pointer names %s %s (%s, %d bytes)",
            pointer.model,
            pointer.version,
            pointer.format,
            pointer.size,
            extra={
                "event": "pointer_resolved",
                "model": pointer.model,
                "version": pointer.version,
                "sha256": pointer.sha256,
                "s3_version_id": pointer.s3_version_id,
            },
        )
        path = self.fetch_artifact(pointer)
        with self._phase(
            Phase.LOADING, f"loading the {pointer.format} artifact", name="load"
        ) as fields:
            module = load_module(path, pointer.format)
            fields["bytes"] = pointer.size
        with self._phase(Phase.LOADING, "warm-up forward", name="warmup"):
            warm_up(module, pointer.input)
        return LoadedModel(pointer=pointer, module=module, path=path, loaded_at=datetime.now(UTC))

    def resolve_pointer(self) -> Pointer:
        """Return the pointer from MODEL_POINTER, else SSM, else MODEL_POINTER_FILE."""
        s = self.settings
        if s.model_pointer:
            return parse_pointer(s.model_pointer, source="MODEL_POINTER")
        if s.model_ssm_parameter:
            name = s.model_ssm_parameter
            value = read_parameter(self.ssm or ssm_client(s), name, self.policy)
            return parse_pointer(value, source=f"SSM parameter {name}")
        assert s.model_pointer_file is not None  # the settings refuse having none of the three
        try:
            text = s.model_pointer_file.read_bytes()
        except OSError as exc:
            raise StartupFailure(
                "pointer_invalid", f"MODEL_POINTER_FILE {s.model_pointer_file} is unreadable: {exc}"
            ) from exc
        return parse_pointer(text, source=f"MODEL_POINTER_FILE {s.model_pointer_file}")

    def fetch_artifact(self, pointer: Pointer) -> Path:
        """Return the path of a cached, SHA-256-verified copy of the pointed-to artifact."""
        s = self.settings
        try:
            cache = ModelCache(s.model_cache_dir, s.model_cache_max_bytes)
            for path in cache.remove_stale_temporaries():
                logger.info(
                    "removed an abandoned partial download %s",
                    path.name,
                    extra={"event": "cache_stale_removed"},
                )
            cached = cache.lookup(pointer.sha256)
            if cached is not None:
                if self._cached_is_usable(cache, cached, pointer):
                    return cached.path
                cache.discard(pointer.sha256)
            cache.make_room(pointer.size, keep=pointer.sha256)
            return self._download(cache, pointer)
        except OSError as exc:
            raise StartupFailure(
                "cache_error", f"model cache {s.model_cache_dir} is unusable: {exc}"
            ) from exc

    def _cached_is_usable(self, cache: ModelCache, cached: CachedFile, pointer: Pointer) -> bool:
        """Return True when the cached entry may be served (per MODEL_CACHE_VERIFY)."""
        mode = self.settings.model_cache_verify
        digest = "not computed (wrong size)"
        # The size is free to check even when verification is switched off.
        if cached.size == pointer.size:
            if mode == "off":
                self._cache_hit(cached.path, verified="off")
                return True
            if mode == "stamp" and cached.stamped:
                with self._phase(
                    Phase.VERIFYING, "checking the cache entry's stamp", name="cache_verify"
                ) as fields:
                    fields["method"] = "stamp"  # nothing is read
                self._cache_hit(cached.path, verified="stamp")
                return True
            with self._phase(
                Phase.VERIFYING, "re-hashing the cached artifact", name="cache_verify"
            ) as fields:
                digest = file_sha256(cached.path)
                fields.update(bytes=cached.size, method="sha256")
            if digest == pointer.sha256:
                cache.stamp(pointer.sha256)
                self._cache_hit(cached.path, verified="sha256")
                return True
        logger.warning(
            "cached artifact %s is corrupt (%d bytes, SHA-256 %s); downloading it again",
            cached.path.name,
            cached.size,
            digest,
            extra={"event": "cache_corrupt"},
        )
        return False

    def _download(self, cache: ModelCache, pointer: Pointer) -> Path:
        s = self.settings
        where = f"s3://{pointer.bucket}/{pointer.key} version {pointer.s3_version_id}"
        client = self.s3 or s3_client(s)

        def progress(done: int) -> None:
            self.state.enter(Phase.DOWNLOADING, f"{done} of {pointer.size} bytes from {where}")

        with cache.pending(pointer.sha256, pointer.size) as pending:
            with self._phase(
                Phase.DOWNLOADING, f"0 of {pointer.size} bytes from {where}", name="download"
            ) as f:
                digest = download_object(
                    client,
                    pointer,
                    pending.fd,
                    part_size=s.download_part_size,
                    concurrency=s.download_concurrency,
                    policy=self.policy,
                    on_progress=progress,
                )
                f["bytes"] = pointer.size
                f["parts"] = -(-pointer.size // s.download_part_size)
            self.metrics.startup_bytes_downloaded.set(pointer.size)
            with self._phase(Phase.VERIFYING, "comparing the SHA-256", name="verify"):
                if digest != pointer.sha256:
                    raise StartupFailure(
                        "checksum_mismatch",
                        f"SHA-256 mismatch for {where}: the pointer says {pointer.sha256}, "
                        f"the downloaded bytes hash to {digest}",
                    )
                path = pending.commit()
        return path

    def _cache_hit(self, path: Path, *, verified: str) -> None:
        self.metrics.startup_bytes_downloaded.set(0)
        logger.info(
            "using the cached artifact %s, nothing downloaded",
            path,
            extra={"event": "cache_hit", "verified": verified},
        )

    def _phase(self, phase: Phase, detail: str, *, name: str) -> _PhaseTimer:
        self.state.enter(phase, detail)
        return _PhaseTimer(name, self.metrics)


class _PhaseTimer:
    """Times one phase; logs it with the fields set on it when the block ends normally."""

    def __init__(self, name: str, metrics: Metrics) -> None:
        self.name = name
        self.metrics = metrics
        self.fields: dict[str, object] = {}
        self.started = 0.0

    def __enter__(self) -> dict[str, object]:
        self.started = time.perf_counter()
        return self.fields

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            return
        seconds = time.perf_counter() - self.started
        self.metrics.startup_phase_seconds.labels(phase=self.name).set(seconds)
        logger.info(
            "%s took %.3fs",
            self.name,
            seconds,
            extra={"event": "startup_phase", "phase": self.name, "duration_s": round(seconds, 4)}
            | self.fields,
        )
