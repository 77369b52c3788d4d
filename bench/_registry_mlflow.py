"""Build an MLflow model registry with many versions of one model (MLflow's venv).

    /tmp/.../bin/python bench/_registry_mlflow.py --db PATH --model M --count N [--api N]

Run with the Python of the benchmark's separate MLflow virtualenv, never the
project's. Creates the SQLite database MLflow's own store would create, the
registered model, and the first ``--api`` versions through MLflow's public
client (``MlflowClient.create_model_version``, timed, so the per-version cost
of the real API is known). The rest are copies of the last API-made row with
their number, times, description and source changed, inserted through MLflow's
own SQLAlchemy tables in one transaction: going through the API for all of
them would take minutes and measures nothing the benchmark reports.

Prints one JSON object: how long each part took.
"""

from __future__ import annotations

import argparse
import json
import time


def source(model: str, version: int) -> str:
    return f"s3://modeldeck-models/models/{model}/2026.{version:05d}/model.pt"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--api", type=int, default=100)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    # Only MLflow's own virtualenv has these; the project's does not.
    import mlflow  # type: ignore[import-not-found]
    from mlflow import MlflowClient
    from mlflow.store.model_registry.dbmodels.models import (  # type: ignore[import-not-found]
        SqlModelVersion,
        SqlRegisteredModel,
    )
    from sqlalchemy import insert, select, update  # type: ignore[import-not-found]

    uri = f"sqlite:///{args.db}"
    started = time.perf_counter()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(args.model, description="benchmark model")
    setup_seconds = time.perf_counter() - started

    api = min(args.api, args.count)
    started = time.perf_counter()
    for number in range(1, api + 1):
        client.create_model_version(
            args.model, source(args.model, number), description=f"nightly build {number}"
        )
    api_seconds = time.perf_counter() - started

    started = time.perf_counter()
    store = client._get_registry_client().store
    with store.ManagedSessionMaker() as session:
        template = (
            session.execute(
                select(SqlModelVersion.__table__).where(
                    SqlModelVersion.name == args.model, SqlModelVersion.version == api
                )
            )
            .one()
            ._asdict()
        )
        base_ms = int(template["creation_time"])
        rows = []
        for number in range(api + 1, args.count + 1):
            at = base_ms + (number - api) * 1000
            row = dict(template)
            row.update(
                version=number,
                creation_time=at,
                last_updated_time=at,
                description=f"nightly build {number}",
                source=source(args.model, number),
            )
            if template.get("storage_location") == template["source"]:
                row["storage_location"] = row["source"]
            rows.append(row)
        if rows:
            session.execute(insert(SqlModelVersion.__table__), rows)
            session.execute(
                update(SqlRegisteredModel.__table__)
                .where(SqlRegisteredModel.name == args.model)
                .values(last_updated_time=rows[-1]["last_updated_time"])
            )
    bulk_seconds = time.perf_counter() - started
    latest = client.search_model_versions(f"name='{args.model}'", max_results=1)
    print(
        json.dumps(
            {
                "mlflow": mlflow.__version__,
                "setup_seconds": setup_seconds,
                "api_versions": api,
                "api_seconds": api_seconds,
                "bulk_versions": args.count - api,
                "bulk_seconds": bulk_seconds,
                "newest": int(latest[0].version) if latest else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
