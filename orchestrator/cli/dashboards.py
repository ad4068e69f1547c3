"""The dashboards, as data: every panel's PromQL, unit and description in one place.

`tritonrag dashboards` turns them into Grafana JSON with Grafana's own grafana-foundation-sdk
(grafana/dashboards/*.json, committed; a unit test checks the files are what this code
generates). `tritonrag top` shows the panels marked `top` in the terminal, reading the same
expressions from Prometheus. The integration test evaluates every expression against a
Prometheus scraping a live stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.settings import ROOT

DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"
DATASOURCE_UID = "prometheus"  # grafana/provisioning/datasources/prometheus.yml
RATE = "$__rate_interval"
# Streams stay open by design; they would drown the latency of everything else.
NOT_STREAMS = 'route!~".*/events|.*/ask|/v1/chat/completions"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str  # Grafana unit id
    queries: tuple[Query, ...]
    top: bool = False  # also in `tritonrag top`
    kind: str = "timeseries"  # or "stat"


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]


def _q(expr: str, legend: str = "") -> tuple[Query, ...]:
    return (Query(expr, legend),)


def _quantiles(metric: str, by: str = "", selector: str = "") -> tuple[Query, ...]:
    group = f"le, {by}" if by else "le"
    labels = f"{{{{{by}}}}} " if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{selector}[{RATE}])))",
            f"{labels}p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


TRITON = Dashboard(
    "tritonrag-triton",
    "tritonrag / Triton",
    "Triton Inference Server: throughput, real batch sizes, where request time goes.",
    (
        Panel(
            "Inferences per second",
            "Successful requests per model and version (nv_inference_request_success).",
            "reqps",
            _q(
                f"sum by (model, version) (rate(nv_inference_request_success[{RATE}]))",
                "{{model}} v{{version}}",
            ),
            top=True,
        ),
        Panel(
            "Average batch size",
            "Inferences per model execution (inference count / execution count): how well "
            "dynamic batching fills each run.",
            "none",
            _q(
                f"sum by (model) (rate(nv_inference_count[{RATE}])) / "
                f"sum by (model) (rate(nv_inference_exec_count[{RATE}]))",
                "{{model}}",
            ),
            top=True,
        ),
        Panel(
            "Queue vs compute time per request",
            "Milliseconds a request waits in Triton's queue and spends in the model, per model.",
            "ms",
            (
                Query(
                    f"sum by (model) (rate(nv_inference_queue_duration_us[{RATE}])) / "
                    f"sum by (model) (rate(nv_inference_request_success[{RATE}])) / 1000",
                    "{{model}} queue",
                ),
                Query(
                    f"sum by (model) (rate(nv_inference_compute_infer_duration_us[{RATE}])) / "
                    f"sum by (model) (rate(nv_inference_request_success[{RATE}])) / 1000",
                    "{{model}} compute",
                ),
            ),
            top=True,
        ),
        Panel(
            "Pending requests",
            "Requests waiting in Triton per model, now.",
            "short",
            _q("sum by (model) (nv_inference_pending_request_count)", "{{model}}"),
        ),
        Panel(
            "Failed inferences",
            "Requests Triton answered with an error, per model.",
            "reqps",
            _q(f"sum by (model) (rate(nv_inference_request_failure[{RATE}]))", "{{model}}"),
        ),
        Panel(
            "Client latency by priority",
            "Embedding calls as the API and workers see them (queries at priority 1, bulk "
            "ingestion at 2): p50/p95/p99.",
            "s",
            _quantiles("tritonrag_triton_request_seconds", "priority"),
        ),
        Panel(
            "Model stubs",
            "1 while every python-backend stub of a model lives (the API's model guard), and "
            "its reloads after a stub died, healed or failed, over the last hour.",
            "short",
            (
                Query("min by (model) (tritonrag_model_up)", "{{model}} up"),
                Query(
                    "sum by (model, outcome) (increase(tritonrag_model_reloads_total[1h]))",
                    "{{model}} reloads {{outcome}}",
                ),
            ),
        ),
    ),
)

PIPELINE = Dashboard(
    "tritonrag-pipeline",
    "tritonrag / Pipeline",
    "Ingestion and the worker lanes: throughput, stage latency, backlog, failures.",
    (
        Panel(
            "Documents ingested per second",
            "Ingest tasks by outcome: succeeded, failed, retried (a Triton or store call), "
            "redelivered (its worker died).",
            "ops",
            _q(
                f'sum by (outcome) (rate(tritonrag_tasks_total{{task="ingest"}}[{RATE}]))',
                "{{outcome}}",
            ),
            top=True,
        ),
        Panel(
            "Chunks per second",
            "Chunks embedded anew, and reused because an unchanged chunk was already stored.",
            "ops",
            _q(f"sum by (outcome) (rate(tritonrag_chunks_total[{RATE}]))", "{{outcome}}"),
            top=True,
        ),
        Panel(
            "Stage latency (p95)",
            "Parse and chunk per document; embed and upsert per batch of chunks.",
            "s",
            _q(
                "histogram_quantile(0.95, sum by (le, stage) "
                f"(rate(tritonrag_ingest_stage_seconds_bucket[{RATE}])))",
                "{{stage}}",
            ),
        ),
        Panel(
            "Lane backlog",
            "Tasks waiting per lane (query, llm, ingest), now.",
            "short",
            _q("sum by (lane) (tritonrag_lane_depth)", "{{lane}}"),
            top=True,
        ),
        Panel(
            "Oldest waiting task",
            "Age of the oldest task waiting per lane; 0 when none waits.",
            "s",
            _q("max by (lane) (tritonrag_lane_oldest_age_seconds)", "{{lane}}"),
            top=True,
        ),
        Panel(
            "Task failures, retries and redeliveries",
            "Every task kind: failed, retried or redelivered per second.",
            "ops",
            _q(
                "sum by (task, outcome) (rate(tritonrag_tasks_total"
                f'{{outcome=~"failed|retried|redelivered"}}[{RATE}]))',
                "{{task}} {{outcome}}",
            ),
        ),
        Panel(
            "Vector store search",
            "One search in the store, in the worker: p50/p95/p99.",
            "s",
            _quantiles("tritonrag_store_search_seconds"),
        ),
        Panel(
            "Cache hit ratio",
            "Query embeddings and answers served from the Redis cache.",
            "percentunit",
            _q(
                f'sum by (cache) (rate(tritonrag_cache_requests_total{{result="hit"}}[{RATE}])) '
                f"/ sum by (cache) (rate(tritonrag_cache_requests_total[{RATE}]))",
                "{{cache}}",
            ),
        ),
    ),
)

API = Dashboard(
    "tritonrag-api",
    "tritonrag / API",
    "The orchestrator's HTTP API: traffic, latency, errors, load shedding, dependencies.",
    (
        Panel(
            "Requests per second",
            "By route template.",
            "reqps",
            _q(f"sum by (route) (rate(tritonrag_http_requests_total[{RATE}]))", "{{route}}"),
            top=True,
        ),
        Panel(
            "Latency",
            "p50/p95/p99 over every route but the streams (job events, answers, chat).",
            "s",
            _quantiles("tritonrag_http_request_seconds", selector=f"{{{NOT_STREAMS}}}"),
            top=True,
        ),
        Panel(
            "Errors by status",
            "4xx and 5xx answers per second, by status code.",
            "reqps",
            _q(
                "sum by (status) (rate(tritonrag_http_requests_total"
                f'{{status=~"[45].."}}[{RATE}]))',
                "{{status}}",
            ),
            top=True,
        ),
        Panel(
            "Requests in flight",
            "Being served now, in all and per shedding lane.",
            "short",
            (
                Query("sum(tritonrag_http_requests_in_flight)", "all"),
                Query("sum by (lane) (tritonrag_lane_in_flight)", "{{lane}}"),
            ),
        ),
        Panel(
            "Load shed",
            "Requests refused with 429 because their lane was full or the API was busy.",
            "reqps",
            _q(f"sum by (lane) (rate(tritonrag_requests_shed_total[{RATE}]))", "{{lane}}"),
        ),
        Panel(
            "Dependencies ready",
            "1 when Redis, Triton's embedding model or the LLM answered the API's readiness "
            "check at the last scrape.",
            "bool",
            _q("min by (dependency) (tritonrag_dependency_ready)", "{{dependency}}"),
            kind="stat",
        ),
    ),
)

LLM = Dashboard(
    "tritonrag-llm",
    "tritonrag / LLM",
    "Answers: time to first token, generation speed, tokens, outcomes.",
    (
        Panel(
            "Time to first token",
            "From the LLM call to its first token (reading the prompt included): p50/p95/p99.",
            "s",
            _quantiles("tritonrag_llm_time_to_first_token_seconds"),
            top=True,
        ),
        Panel(
            "Generation speed",
            "Answer tokens per second after the first, per answer: p50/p95/p99.",
            "none",
            _quantiles("tritonrag_llm_tokens_per_second"),
            top=True,
        ),
        Panel(
            "Tokens per second",
            "Prompt tokens read and answer tokens written, all answers together.",
            "none",
            _q(f"sum by (kind) (rate(tritonrag_llm_tokens_total[{RATE}]))", "{{kind}}"),
        ),
        Panel(
            "Answers by outcome",
            "Completed, loop (stopped where it began repeating), cancelled (the client left), "
            "error, timeout.",
            "ops",
            _q(f"sum by (outcome) (rate(tritonrag_llm_answers_total[{RATE}]))", "{{outcome}}"),
        ),
    ),
)

DASHBOARDS = (TRITON, PIPELINE, API, LLM)


def to_grafana(dashboard: Dashboard) -> dict[str, object]:
    """The Grafana JSON of `dashboard` (grafana-foundation-sdk, a dev dependency)."""
    from grafana_foundation_sdk.builders import prometheus, stat, timeseries
    from grafana_foundation_sdk.builders.dashboard import Dashboard as Board
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

    source = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    board = (
        Board(dashboard.title)
        .uid(dashboard.uid)
        .description(dashboard.description)
        .tags(["tritonrag"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
    )
    for i, panel in enumerate(dashboard.panels):
        builder = stat.Panel() if panel.kind == "stat" else timeseries.Panel()
        builder = (
            builder.id(i + 1)
            .title(panel.title)
            .description(panel.description)
            .unit(panel.unit)
            .datasource(source)
            .grid_pos(GridPos(h=8, w=12, x=12 * (i % 2), y=8 * (i // 2)))
        )
        for ref, query in zip("ABCDEFGH", panel.queries, strict=False):
            target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(source)
            builder = builder.with_target(target.legend_format(query.legend or "__auto"))
        board = board.with_panel(builder)
    encoded: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def render(dashboard: Dashboard) -> str:
    return json.dumps(to_grafana(dashboard), indent=2, sort_keys=True) + "\n"


def write(folder: Path = DASHBOARDS_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for dashboard in DASHBOARDS:
        path = folder / f"{dashboard.uid}.json"
        path.write_text(render(dashboard))
        paths.append(path)
    return paths
