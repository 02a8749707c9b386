#!/usr/bin/env python3
"""Create a FlexCore pipeline, run it and follow the run's events, with plain NATS.

Uses only nats-py (with nkeys) and the wire contract documented by the JSON Schemas in
schemas/ and docs/messaging.md:
commands are JSON requests on flexcore.cmd.<aggregate>.<action> (schemas/commands/),
replies are {"ok": true, ...} or {"ok": false, "error": {code, message, details}}
(schemas/replies/command-reply.json), events are envelopes (schemas/events/envelope.json)
on the JetStream stream FLEXCORE_EVENTS, subject flexcore.evt.<aggregate>.<id>.<event>.

The plugins must already be registered (e.g. by `flexctl dev` or `flexctl plugin
register`); by default the example generator feeds the example jsonl loader, which writes
into the directory the loader was granted (/output in its sandbox), so this program needs
no files of its own. `--loader discard` needs no grant at all.

Exit status: 0 run succeeded; 1 run failed, was cancelled or timed out; 2 a command was
rejected; 3 no answer in time (timeout, FlexCore or NATS unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
import uuid

import nats
import nats.errors
import nats.js.errors
from nats.js.api import DeliverPolicy

EVENTS_STREAM = "FLEXCORE_EVENTS"
FAILURES = ("run.failed", "run.cancelled", "run.timed_out")


class Rejected(Exception):
    """A command refused by FlexCore: the reply's error object."""

    def __init__(self, subject: str, error: dict):
        self.code = error.get("code", "?")
        self.message = error.get("message", "")
        self.details = error.get("details")
        super().__init__(f"{subject} rejected ({self.code}): {self.message}")


class Unanswered(Exception):
    """No reply or event in time."""


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # FLEXCORE__NATS__URL as `flexctl dev` prints it to export (and flexctl reads), else the
    # nats tools' NATS_URL.
    p.add_argument(
        "--nats-url", default=env("FLEXCORE__NATS__URL") or env("NATS_URL") or "nats://127.0.0.1:4222"
    )
    p.add_argument(
        "--nkey-seed-file",
        default=env("FLEXCORE_NKEY_SEED_FILE"),
        help="this application's NKey seed (flexctl dev writes .flexcore/keys/app.nk); without it, no login",
    )
    p.add_argument(
        "--identity",
        default=env("FLEXCORE_IDENTITY", "app"),
        help="the identity's name in the identities file: replies come to _INBOX.<identity>",
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
        help='JSON (default: {"records": RECORDS, "stream": "python_example"}, for the generator)',
    )
    p.add_argument(
        "--loader-config",
        type=json.loads,
        default=env("FLEXCORE_LOADER_CONFIG"),
        help='JSON (default for jsonl: {"directory": "/output/python-example"}, else {})',
    )
    p.add_argument("--name", default=env("FLEXCORE_PIPELINE_NAME"), help="pipeline name (default: unique)")
    p.add_argument("--owner", default=env("FLEXCORE_OWNER", "python-example"))
    p.add_argument("--timeout", type=float, default=float(env("FLEXCORE_TIMEOUT", "60")), help="seconds")
    args = p.parse_args()
    args.extractor = pinned(args.extractor, args.plugin_version)
    args.loader = pinned(args.loader, args.plugin_version)
    if args.extractor_config is None:
        args.extractor_config = {"records": args.records, "stream": "python_example"}
    if args.loader_config is None:
        # flexctl dev grants the jsonl loader a host directory as /output in its sandbox.
        args.loader_config = {"directory": "/output/python-example"} if args.loader.startswith("jsonl@") else {}
    if args.name is None:
        # Names are unique among non-archived pipelines: 1-128 of a-z 0-9 - _.
        args.name = f"python-example-{uuid.uuid4().hex[:12]}"
    return args


def pinned(plugin: str, version: str) -> str:
    """A plugin reference as steps take it: name@version."""
    return plugin if "@" in plugin else f"{plugin}@{version}"


class Signer:
    """Signs commands with the application's NKey, as docs/security.md describes: the
    command service then records the identity's name as the actor and checks its role.
    """

    def __init__(self, seed_file: str):
        import nkeys

        with open(seed_file, "rb") as f:
            self.keys = nkeys.from_seed(bytearray(f.read().strip()))
        self.public_key = self.keys.public_key.decode()

    def headers(self, subject: str, body: bytes) -> dict:
        signed_at = str(int(time.time() * 1000))
        # The tag, the subject, Nats-Msg-Id, Flexcore-Transaction-Id (none on a command),
        # Flexcore-Signed-At, Flexcore-Signer, each on its line, then the body.
        signed = "\n".join(["flexcore-sig-v1", subject, "", "", signed_at, self.public_key, ""]).encode() + body
        signature = base64.urlsafe_b64encode(self.keys.sign(signed)).rstrip(b"=").decode()
        return {"Flexcore-Signer": self.public_key, "Flexcore-Signed-At": signed_at, "Flexcore-Signature": signature}


SIGNER: Signer | None = None


async def command(nc, aggregate: str, action: str, body: dict, attempts: int = 3) -> dict:
    """Sends a command and returns its accepted reply; raises Rejected or Unanswered.

    The command_id makes the request idempotent: a retry after a lost reply returns the
    first reply instead of acting twice.
    """
    subject = f"flexcore.cmd.{aggregate}.{action}"
    body = {"command_id": str(uuid.uuid4()), **body}
    payload = json.dumps(body).encode()
    for attempt in range(1, attempts + 1):
        # Signed afresh for every try: the signing time must be recent.
        headers = SIGNER.headers(subject, payload) if SIGNER else None
        try:
            msg = await nc.request(subject, payload, timeout=5, headers=headers)
            break
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            if attempt == attempts:
                raise Unanswered(f"{subject}: no reply ({type(e).__name__}); is flexcore-command running?") from e
            await asyncio.sleep(attempt)
    reply = json.loads(msg.data)
    if not reply.get("ok"):
        raise Rejected(subject, reply.get("error") or {})
    return reply


async def follow(nc, args: argparse.Namespace) -> int:
    js = nc.jetstream()
    pipeline = await command(
        nc,
        "pipeline",
        "create",
        {
            "name": args.name,
            "owner": args.owner,
            "steps": [
                {"plugin": args.extractor, "config": args.extractor_config},
                {"plugin": args.loader, "config": args.loader_config},
            ],
        },
    )
    pipeline_id = pipeline["aggregate_id"]
    print(f"pipeline {args.name} created: {pipeline_id}", flush=True)

    # Choose the run id ourselves and subscribe before requesting the run, so no event can
    # be missed. Ordered consumer: ephemeral, in order, no acks, deliver all.
    run_id = str(uuid.uuid4())
    try:
        sub = await js.subscribe(
            f"flexcore.evt.run.{run_id}.>",
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
    except nats.js.errors.NotFoundError as e:
        raise Unanswered(f"stream {EVENTS_STREAM} not found; is flexcore-command running?") from e
    try:
        await command(nc, "run", "request", {"pipeline_id": pipeline_id, "run_id": run_id})
        print(f"run {run_id} requested", flush=True)
        deadline = time.monotonic() + args.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unanswered(f"run {run_id} did not finish within {args.timeout:g} s")
            try:
                msg = await sub.next_msg(timeout=remaining)
            except nats.errors.TimeoutError:
                continue
            event = json.loads(msg.data)
            kind, data = event["type"], event["data"]
            print(f"{kind} (version {event['version']}, position {event['global_position']})", flush=True)
            if kind == "run.succeeded":
                counters = data.get("counters", {})
                per_stream = ", ".join(f"{s}: {n}" for s, n in sorted(counters.items()))
                print(f"run.succeeded: {sum(counters.values())} records ({per_stream})", flush=True)
                return 0
            if kind in FAILURES:
                if kind != "run.cancelled" and not data.get("final", True):
                    print(f"  attempt {data.get('attempt')} ended, a retry follows", flush=True)
                    continue
                error = data.get("error") or data.get("reason")
                print(f"{kind}: {json.dumps(error)}", file=sys.stderr)
                return 1
    finally:
        await sub.unsubscribe()


async def report_nats_error(e: Exception) -> None:
    print(f"nats: {e!r}", file=sys.stderr)


async def main() -> int:
    global SIGNER
    args = parse_args()
    try:
        login = {}
        if args.nkey_seed_file:
            # Logged in as the application's identity (role client): its permissions let it
            # send application commands and queries and follow events; replies come to its
            # own inbox prefix. The same key signs its commands.
            login = {"nkeys_seed": args.nkey_seed_file, "inbox_prefix": f"_INBOX.{args.identity}"}
            SIGNER = Signer(args.nkey_seed_file)
        nc = await nats.connect(
            args.nats_url,
            **login,
            connect_timeout=5,
            max_reconnect_attempts=3,  # also bounds the first connection's attempts
            reconnect_time_wait=1,
            error_cb=report_nats_error,
        )
    except Exception as e:  # nats-py raises several types for an unreachable server
        print(f"error: cannot connect to {args.nats_url}: {e}", file=sys.stderr)
        return 3
    try:
        return await follow(nc, args)
    except Rejected as e:
        print(f"error: {e}", file=sys.stderr)
        if e.details is not None:
            print(f"details: {json.dumps(e.details)}", file=sys.stderr)
        return 2
    except Unanswered as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        await nc.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
