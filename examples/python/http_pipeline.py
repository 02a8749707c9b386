#!/usr/bin/env python3
"""Create (or reuse) a FlexCore pipeline, run it and follow the run, over the HTTP API.

The HTTP variant of run_pipeline.py: nothing but `requests` and the REST API of
flexcore-gateway (docs/http-api.md), whose bodies are the contract's JSON (schemas/):

  GET  /health                                  the gateway is up
  GET  /api/v1/flexcore/pipelines?name=NAME     reuse a pipeline of that name, else
  POST /api/v1/flexcore/pipelines               create it (the body is pipeline.create's)
  POST /api/v1/flexcore/pipelines/{id}/execute  run it (Idempotency-Key: a retry is the same run)
  GET  /api/v1/flexcore/runs/{id}/events        its events as Server-Sent Events, until it ends
  GET  /api/v1/flexcore/runs/{id}               the final run (Consistency-Position: read your write)

Errors are RFC 7807 problem documents (application/problem+json); the script prints one
on purpose at the end (a list query with a limit the view refuses).

The plugins must already be registered (e.g. by `flexctl dev`); by default the example
generator feeds the example jsonl loader, which writes into the directory the loader was
granted (/output in its sandbox). `--loader discard` needs no grant at all. `flexctl dev`
lets callers without credentials in as admin; elsewhere set FLEXCORE_API_KEY to a key made
with `flexctl api-key create NAME --role admin` (operator suffices to run an existing
pipeline).

Exit status: 0 run succeeded; 1 run failed, was cancelled or timed out; 2 a request was
refused (the problem document is printed); 3 no answer in time (timeout, gateway or
services unreachable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

import requests

API = "/api/v1/flexcore"
FAILURES = ("run.failed", "run.cancelled", "run.timed_out")
# Statuses worth another try with the same request (and the same Idempotency-Key).
TRANSIENT = (408, 429, 502, 503, 504)


class Refused(Exception):
    """A request refused by FlexCore: its problem document."""

    def __init__(self, what: str, response: requests.Response):
        self.status = response.status_code
        try:
            self.problem = response.json()
        except ValueError:
            self.problem = {"detail": response.text[:500]}
        code = self.problem.get("code", "?")
        reason = self.problem.get("reason")
        super().__init__(
            f"{what} refused: {self.status} {code}{f' ({reason})' if reason else ''}: {self.problem.get('detail', '')}"
        )


class Unanswered(Exception):
    """No answer in time."""


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=env("FLEXCORE_HTTP_URL", "http://127.0.0.1:8080"), help="the gateway")
    p.add_argument(
        "--api-key",
        default=env("FLEXCORE_API_KEY"),
        help="sent as Authorization: Bearer KEY (an API key or a JWT); without it, anonymous",
    )
    p.add_argument("--extractor", default=env("FLEXCORE_EXTRACTOR", "generator"), help="NAME or NAME@VERSION")
    p.add_argument("--loader", default=env("FLEXCORE_LOADER", "jsonl"), help="NAME or NAME@VERSION")
    p.add_argument(
        "--plugin-version",
        default=env("FLEXCORE_PLUGIN_VERSION", "0.1.0"),
        help="version of plugins given without one (flexctl dev registers the examples at 0.1.0)",
    )
    p.add_argument("--records", type=int, default=int(env("FLEXCORE_RECORDS", "100")), help="generator records")
    p.add_argument(
        "--extractor-config",
        type=json.loads,
        default=env("FLEXCORE_EXTRACTOR_CONFIG"),
        help='JSON (default: {"records": RECORDS, "stream": "http_example"}, for the generator)',
    )
    p.add_argument(
        "--loader-config",
        type=json.loads,
        default=env("FLEXCORE_LOADER_CONFIG"),
        help='JSON (default for jsonl: {"directory": "/output/http-example"}, else {})',
    )
    p.add_argument(
        "--name",
        default=env("FLEXCORE_PIPELINE_NAME", "http-example"),
        help="pipeline name: an active pipeline of that name is reused as it is, else it is created",
    )
    p.add_argument("--owner", default=env("FLEXCORE_OWNER", "http-example"))
    p.add_argument("--timeout", type=float, default=float(env("FLEXCORE_TIMEOUT", "60")), help="seconds")
    args = p.parse_args()
    args.extractor = pinned(args.extractor, args.plugin_version)
    args.loader = pinned(args.loader, args.plugin_version)
    if args.extractor_config is None:
        args.extractor_config = {"records": args.records, "stream": "http_example"}
    if args.loader_config is None:
        # flexctl dev grants the jsonl loader a host directory as /output in its sandbox.
        args.loader_config = {"directory": "/output/http-example"} if args.loader.startswith("jsonl@") else {}
    args.url = args.url.rstrip("/")
    return args


def pinned(plugin: str, version: str) -> str:
    """A plugin reference as steps take it: name@version."""
    return plugin if "@" in plugin else f"{plugin}@{version}"


class Gateway:
    """The HTTP API: one session, the credentials, one correlation id for everything this
    program does (the gateway records it on the commands' events and in its logs).
    """

    def __init__(self, args: argparse.Namespace):
        self.base = args.url
        self.session = requests.Session()
        self.session.headers["Flexcore-Correlation-Id"] = f"http-example-{uuid.uuid4().hex[:12]}"
        if args.api_key:
            self.session.headers["Authorization"] = f"Bearer {args.api_key}"

    def request(self, method: str, path: str, *, attempts: int = 3, ok=(200,), **kwargs) -> requests.Response:
        """Sends one request, trying again after a transient failure (same headers, so
        the same Idempotency-Key); returns the response if its status is in `ok`, raises
        Refused with the problem document otherwise, Unanswered when nobody answered.
        """
        url = self.base + path
        what = f"{method} {path}"
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(method, url, timeout=(5, 40), **kwargs)
            except requests.RequestException as e:
                if attempt == attempts:
                    raise Unanswered(f"{what}: {e}") from e
                time.sleep(attempt)
                continue
            if response.status_code in ok:
                return response
            if response.status_code in TRANSIENT and attempt < attempts:
                response.close()  # (a stream=True response holds its connection until then)
                wait = response.headers.get("Retry-After", "")
                time.sleep(min(int(wait), 10) if wait.isdigit() else attempt)
                continue
            if response.status_code in (502, 503, 504, 408):
                raise Unanswered(str(Refused(what, response)))
            raise Refused(what, response)
        raise AssertionError("unreachable")


def health(gw: Gateway) -> None:
    """GET /health (no credentials needed): 200 while the gateway is connected to NATS."""
    try:
        response = gw.session.get(gw.base + "/health", timeout=5)
    except requests.RequestException as e:
        raise Unanswered(f"no gateway at {gw.base}: {e} (is `flexctl dev` running?)") from e
    if response.status_code != 200:
        raise Unanswered(f"the gateway at {gw.base} is not healthy: {response.status_code} {response.text.strip()}")
    print(f"gateway {gw.base}: {response.json()}", flush=True)


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
        return True
    except ValueError:
        return False


def find_or_create_pipeline(gw: Gateway, args: argparse.Namespace) -> str:
    """The id of the active (or paused) pipeline called args.name, created if there is none."""
    # `name` filters exactly (a trailing * would make it a prefix); archived pipelines keep
    # their names but free them for reuse, so they do not count.
    page = gw.request("GET", f"{API}/pipelines", params={"name": args.name, "limit": 10}).json()
    for item in page["items"]:
        if item["name"] == args.name and item["state"] != "archived":
            print(f"pipeline {args.name} exists: {item['pipeline_id']} (state {item['state']}, reused as it is)")
            return item["pipeline_id"]
    body = {
        "name": args.name,
        "owner": args.owner,
        "description": "examples/python/http_pipeline.py",
        "steps": [
            {"plugin": args.extractor, "config": args.extractor_config},
            {"plugin": args.loader, "config": args.loader_config},
        ],
    }
    try:
        # A fresh Idempotency-Key per attempt of this program: its own retries (in
        # request()) cannot create the pipeline twice.
        response = gw.request(
            "POST", f"{API}/pipelines", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}, ok=(201,)
        )
    except Refused as e:
        # Created by someone else since the list: the refusal names the owner of the name.
        owner = str(e.problem.get("details", {}).get("owner", ""))
        if e.status == 409 and e.problem.get("reason") == "unique" and is_uuid(owner):
            print(f"pipeline {args.name} was just created elsewhere: {owner}", flush=True)
            return owner
        raise
    created = response.json()
    print(
        f"pipeline {args.name} created: {created['aggregate_id']} "
        f"(Location {response.headers['Location']}, ETag {response.headers['ETag']})",
        flush=True,
    )
    return created["aggregate_id"]


def sse(response: requests.Response):
    """The Server-Sent Events of a streaming response, parsed by hand: (id, event, data)
    each, and (None, None, None) for a comment (the gateway's keep-alive, every 15 s), so
    that the caller can check its deadline while the run is quiet.

    Lines end at b"\n" in the raw bytes and are decoded as UTF-8 (requests would decode a
    text/* body without a charset as ISO-8859-1); a blank line ends an event.
    """
    event_id, event, data = None, None, []
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):  # as the bytes arrive
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode("utf-8").rstrip("\r")
            if not line:
                if data:
                    yield event_id, event or "message", "\n".join(data)
                event, data = None, []
            elif line.startswith(":"):
                yield None, None, None
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "id":
                    event_id = value
                elif field == "event":
                    event = value
                elif field == "data":
                    data.append(value)


def follow(gw: Gateway, run_id: str, deadline: float) -> tuple[int, int]:
    """Follows GET /runs/{id}/events until the run ends; (exit status, last position seen).

    The gateway ends the stream after the run ended. Should the connection break before,
    the stream is opened again: it replays the run from its first event, so events up to
    the last id seen are skipped.
    """
    last = 0
    for _ in range(5):
        response = gw.request(
            "GET",
            f"{API}/runs/{run_id}/events",
            stream=True,
            headers={"Accept": "text/event-stream"},
        )
        with response:
            try:
                for event_id, kind, data in sse(response):
                    if time.monotonic() > deadline:
                        raise Unanswered(f"run {run_id} did not finish in time (--timeout)")
                    if kind is None or event_id is None or int(event_id) <= last:
                        continue
                    last = int(event_id)
                    envelope = json.loads(data)
                    print(f"{kind} (version {envelope['version']}, position {last})", flush=True)
                    details = envelope["data"]
                    if kind == "run.succeeded":
                        counters = details.get("counters", {})
                        per_stream = ", ".join(f"{s}: {n}" for s, n in sorted(counters.items()))
                        print(f"run.succeeded: {sum(counters.values())} records ({per_stream})", flush=True)
                        return 0, last
                    if kind in FAILURES:
                        if kind != "run.cancelled" and not details.get("final", True):
                            print(f"  attempt {details.get('attempt')} ended, a retry follows", flush=True)
                            continue
                        print(f"{kind}: {json.dumps(details.get('error') or details.get('reason'))}", file=sys.stderr)
                        return 1, last
            except requests.RequestException as e:
                print(f"  the event stream broke ({e}); opening it again", file=sys.stderr)
                continue
        if time.monotonic() > deadline:
            raise Unanswered(f"run {run_id} did not finish in time (--timeout)")
        print("  the event stream ended before the run; opening it again", file=sys.stderr)
        time.sleep(1)
    raise Unanswered(f"the event stream of run {run_id} kept breaking")


def show_problem(gw: Gateway) -> None:
    """A bad request on purpose: a list limit over 1,000. Nothing is changed by it."""
    response = gw.session.get(gw.base + f"{API}/runs", params={"limit": 5000}, timeout=10)
    print(
        f"a bad request (GET {API}/runs?limit=5000) is answered {response.status_code} "
        f"{response.headers.get('Content-Type')}:",
        flush=True,
    )
    print(json.dumps(response.json(), indent=2), flush=True)


def main() -> int:
    args = parse_args()
    gw = Gateway(args)
    try:
        health(gw)
        pipeline_id = find_or_create_pipeline(gw, args)

        # The Idempotency-Key makes the execute safe to retry: the same key is the same
        # run (request() retries a lost answer with it).
        key = f"http-example-{uuid.uuid4()}"
        response = gw.request(
            "POST", f"{API}/pipelines/{pipeline_id}/execute", headers={"Idempotency-Key": key}, ok=(202,)
        )
        run_id = response.json()["aggregate_id"]
        position = response.headers["Consistency-Position"]
        print(f"run {run_id} requested (Location {response.headers['Location']})", flush=True)

        # Read your write: the run view answers once it holds the run. (The event stream
        # answers 404 for a run the view does not have yet.)
        run = gw.request("GET", f"{API}/runs/{run_id}", headers={"Consistency-Position": position}).json()
        print(f"run {run_id} is {run['state']}", flush=True)

        status, last = follow(gw, run_id, time.monotonic() + args.timeout)

        # The final run, as of the last event seen.
        response = gw.request("GET", f"{API}/runs/{run_id}", headers={"Consistency-Position": str(last)})
        run = response.json()
        summary = {k: run.get(k) for k in ("state", "attempt", "records_total", "counters", "duration_ms", "error")}
        print(f"run {run_id} (ETag {response.headers.get('ETag')}): {json.dumps(summary)}", flush=True)

        show_problem(gw)
        return status
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        print(json.dumps(e.problem, indent=2), file=sys.stderr)
        if e.status == 401:
            print(
                "hint: set FLEXCORE_API_KEY to a key from `flexctl api-key create NAME --role admin --file "
                ".flexcore/api-keys.json`, or run `flexctl dev` with anonymous access (its default)",
                file=sys.stderr,
            )
        return 2
    except Unanswered as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
