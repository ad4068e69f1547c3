// k6 script for perf/compare.py's open-loop points: requests start at RATE per second
// whatever the answers do (constant-arrival-rate), each posting the next body from BODIES
// (one JSON document per line) to URL. A request that finds no free VU (MAX_IN_FLIGHT in
// flight) is dropped and counted. handleSummary prints the figures as one JSON line.
import http from "k6/http";
import { Counter } from "k6/metrics";
import { SharedArray } from "k6/data";
import exec from "k6/execution";

const bodies = new SharedArray("bodies", () =>
  open(__ENV.BODIES).split("\n").filter((line) => line.length > 0),
);
const shed = new Counter("shed_429");
const failed = new Counter("failed");

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ["p(50)", "p(99)", "max"],
  scenarios: {
    open: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE),
      timeUnit: "1s",
      duration: `${__ENV.SECONDS}s`,
      preAllocatedVUs: Number(__ENV.MAX_IN_FLIGHT),
      maxVUs: Number(__ENV.MAX_IN_FLIGHT),
      gracefulStop: "30s",
    },
  },
};

export default function () {
  const body = bodies[exec.scenario.iterationInTest % bodies.length];
  const response = http.post(__ENV.URL, body, {
    headers: { "Content-Type": "application/json" },
    timeout: "30s",
  });
  if (response.status === 429) shed.add(1);
  else if (response.status !== 200) failed.add(1);
}

function count(data, name) {
  return data.metrics[name] ? data.metrics[name].values.count : 0;
}

export function handleSummary(data) {
  const latency = data.metrics.http_req_duration.values;
  const figures = {
    requests: count(data, "http_reqs"),
    dropped: count(data, "dropped_iterations"),
    shed: count(data, "shed_429"),
    failed: count(data, "failed"),
    p50_ms: latency["p(50)"],
    p99_ms: latency["p(99)"],
    max_ms: latency.max,
  };
  return { stdout: JSON.stringify(figures) + "\n" };
}
