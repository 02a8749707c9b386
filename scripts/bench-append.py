#!/usr/bin/env python3
"""What `flexcore_append` costs per command inside Postgres, by part.

    python3 scripts/bench-append.py [--batches 60] [--batch-size 64] [--rounds 2]

Creates a scratch database, applies the workspace migrations with psql, seeds 3,000
aggregates at version 1 (what the checks read), then times batches of `run.request`-like
appends (one `run.requested` event of ~1.1 KB, as the scheduler burst writes) in variants:

  plain           event + command log, as PL/pgSQL's per-command loop writes them
  slot            + a run-slot acquisition (advisory lock, count, insert)
  checks          + three version checks (a run's pipeline, schedule and plugins)
  slot+checks     what a scheduled `run.request` costs
  set-based       plain's writes as two set-based INSERTs for the whole batch (no
                  per-command sub-transaction, no duplicate or conflict handling): the
                  floor a rewrite of the function could approach
  parse only      `jsonb_array_length(batch)`: sending and parsing the batch, no writes

Each batch is one `SELECT flexcore_append(batch)`, one transaction, with
synchronous_commit off. Prints, per command, the CPU time of the Postgres backend that ran
them (from /proc, so Postgres must run on this machine) and the wall time, which also
holds psql reading and sending the batches. Needs psql and Postgres at PGHOST/PGPORT
(default 127.0.0.1:5432, user postgres, trust). Used for docs/benchmarks.md,
"Scheduler".
"""

import argparse
import json
import os
import pathlib
import random
import subprocess
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = os.environ.get("PGPORT", "5432")
SEEDED = 3000

# A run.requested event as a scheduled run of a two-step pipeline writes it.
STEP = {
    "config": {},
    "runtime": "wasm",
    "module_digest": "sha256:" + "d" * 64,
}
DATA = {
    "attempt": 1,
    "trigger": "schedule",
    "definition": {
        "retry": {"multiplier": 2.0, "max_attempts": 3, "max_backoff_seconds": 600, "initial_backoff_seconds": 10},
        "steps": [
            dict(STEP, kind="extractor", plugin="bench-extractor@1.0.0", plugin_id=str(uuid.uuid4())),
            dict(STEP, kind="loader", plugin="bench-loader@1.0.0", plugin_id=str(uuid.uuid4())),
        ],
        "overlap": "allow",
        "max_active_runs": 100,
        "timeout_seconds": 3600,
        "lease_seconds": 60,
    },
    "definition_version": 1,
    "pipeline_name": "bench-00000000-pipeline-0001",
    "scheduled_for": "2026-11-25T01:18:00Z",
}
METADATA = {"actor": "flexcore-scheduler/bench", "causation_id": None, "correlation_id": None}


# The backend's user + system CPU time, in clock ticks, printed by psql's shell escape.
CPU_TICKS = "\\! awk '{print \"cpu-ticks\", $14 + $15}' /proc/$BACKEND/stat"
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def psql(db, *args):
    cmd = ["psql", "-h", HOST, "-p", PORT, "-U", "postgres", "-d", db, "-qtA", "-v", "ON_ERROR_STOP=1", *args]
    return subprocess.run(cmd, text=True, check=True, capture_output=True).stdout


def request(seeded, slot, checks, rng):
    run = str(uuid.uuid4())
    command = str(uuid.uuid4())
    data = dict(DATA, run_id=run, pipeline_id=str(uuid.uuid4()), schedule_id=str(uuid.uuid4()))
    req = {
        "command_id": command,
        "command_type": "run.request",
        "payload_hash": "0" * 64,
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "aggregate_type": "run",
                "aggregate_id": run,
                "version": 1,
                "event_type": "run.requested",
                "schema_version": 1,
                "data": data,
                "metadata": dict(METADATA, causation_id=command, correlation_id=command),
            }
        ],
        "claims": [],
        "releases": [],
        "slot_acquire": {"pool": str(uuid.uuid4()), "holder": run, "max": 100} if slot else None,
        "slot_release": None,
        "reply": {"ok": True, "run_id": run},
    }
    if checks:
        req["checks"] = [{"aggregate_id": a, "version": 1} for a in rng.sample(seeded, 3)]
    return req


def literal(batch):
    return "'" + json.dumps(batch).replace("'", "''") + "'::jsonb"


SET_BASED = """WITH b AS (SELECT value AS req FROM jsonb_array_elements({batch})),
ins AS (INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, schema_version, data, metadata)
        SELECT (e->>'event_id')::uuid, e->>'aggregate_type', (e->>'aggregate_id')::uuid, (e->>'version')::bigint,
               e->>'event_type', (e->>'schema_version')::integer, e->'data', e->'metadata'
          FROM b, jsonb_array_elements(b.req->'events') AS e
        RETURNING global_position),
log AS (INSERT INTO command_log (command_id, command_type, payload_hash, reply)
        SELECT (req->>'command_id')::uuid, req->>'command_type', req->>'payload_hash', req->'reply' FROM b
        RETURNING 1)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM log);"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(7)
    db = f"flexcore_append_bench_{os.getpid()}"
    psql("postgres", "-c", f"CREATE DATABASE {db}")
    try:
        for migration in sorted((ROOT / "migrations").glob("*.sql")):
            psql(db, "-f", str(migration))
        seeded = [str(uuid.uuid4()) for _ in range(SEEDED)]
        psql(
            db,
            "-c",
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, schema_version, data, metadata) "
            "SELECT gen_random_uuid(), 'pipeline', a::uuid, 1, 'pipeline.created', 1, '{}', '{}' "
            f"FROM unnest(ARRAY[{','.join(repr(s) for s in seeded)}]) AS a",
        )
        variants = [
            ("plain", False, False, False),
            ("slot", True, False, False),
            ("checks", False, True, False),
            ("slot+checks", True, True, False),
            ("set-based", False, False, True),
            ("parse only", False, False, None),
        ]
        print(f"{args.batches} batches of {args.batch_size} commands per variant, {args.rounds} round(s)")
        for round_ in range(1, args.rounds + 1):
            for name, slot, checks, set_based in variants:
                lines = [
                    "SET synchronous_commit = off;",
                    "SELECT pg_backend_pid() AS pid \\gset",
                    "\\setenv BACKEND :pid",
                    CPU_TICKS,
                ]
                for _ in range(args.batches):
                    batch = [request(seeded, slot, checks, rng) for _ in range(args.batch_size)]
                    if set_based is None:
                        lines.append(f"SELECT jsonb_array_length({literal(batch)});")
                    elif set_based:
                        lines.append(SET_BASED.format(batch=literal(batch)))
                    else:
                        lines.append(f"SELECT length(flexcore_append({literal(batch)})::text);")
                lines.append(CPU_TICKS)
                with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
                    script.write("\n".join(lines) + "\n")
                    script.flush()
                    started = time.perf_counter()
                    out = psql(db, "-f", script.name)
                    elapsed = time.perf_counter() - started
                ticks = [int(line.split()[1]) for line in out.splitlines() if line.startswith("cpu-ticks ")]
                commands = args.batches * args.batch_size
                cpu = (ticks[-1] - ticks[0]) / TICKS_PER_SECOND * 1e6 / commands
                wall = elapsed * 1e6 / commands
                print(f"round {round_}  {name:<12} Postgres CPU {cpu:6.1f} µs, wall {wall:6.1f} µs per command")
    finally:
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    main()
