#!/usr/bin/env python3
"""Real Segment / RudderStack SDKs (Python, and Segment's Node SDK), unchanged, against a running siyu.

    segment_sdk_test.py --sdk segment|rudder|node --host http://127.0.0.1:PORT \
        --write-key wk_... --secret-key sk_...

Sends identify, track ("Order Completed" + a custom "Store Visit"), page, screen, group and alias
through the SDK's own public API (Python: the module-level API, async consumer thread, gzip on,
on_error recording every failure; node: node/send.mjs with @segment/analytics-node), then reads
the result back through siyu's native API with the secret key. Finally sends one message twice
with an explicit message_id (Python: a second, synchronous, uncompressed client) and checks that
the second copy was deduplicated; for the Python SDKs it also checks siyu's /v1/batch answer
body through the SDK's own `request.post`.

Exits 0 when every check holds, 1 otherwise (each failed check is printed).
"""

import argparse
import importlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone

FAILURES = []


def check(cond, what, detail=None):
    """Records one check; `detail` (what was actually seen) is printed only when it fails."""
    if cond:
        print(f"  ok    {what}")
    else:
        print(f"  FAIL  {what}" + (f"\n        got: {detail}" if detail is not None else ""))
        FAILURES.append(what)
    return cond


class Api:
    """siyu's native read API, authenticated with the tenant's secret key."""

    def __init__(self, host, secret_key):
        self.host = host.rstrip("/")
        self.secret_key = secret_key

    def get(self, path, **query):
        url = self.host + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.secret_key}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return res.status, json.loads(res.read() or b"null")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, body.decode("utf-8", "replace")

    def lookup(self, kind, value):
        return self.get("/api/v1/profiles/lookup", kind=kind, value=value)

    def events(self, profile_id):
        return self.get(f"/api/v1/profiles/{profile_id}/events", limit=500)


def wait_for(fetch, ready, timeout=10.0):
    """Polls `fetch()` until `ready(result)`; ingestion may be applied to profiles a moment later."""
    deadline = time.monotonic() + timeout
    result = fetch()
    while not ready(result) and time.monotonic() < deadline:
        time.sleep(0.2)
        result = fetch()
    return result


PYTHON_SDKS = {"segment": "segment.analytics", "rudder": "rudderstack.analytics"}
HERE = os.path.dirname(os.path.abspath(__file__))


class Person:
    """The made-up customer one SDK run is about; unique per run so runs never share a profile."""

    PREFIXES = {"segment": "138", "rudder": "139", "node": "137"}

    def __init__(self, sdk):
        run = uuid.uuid4().hex[:10]
        self.run = run
        self.user_id = f"{sdk}-user-{run}"
        self.anonymous_id = f"{sdk}-anon-{run}"
        # A mainland mobile number as people type it: spaces, no country code. Random, because a
        # phone already linked to another user's profile (an earlier run on the same database)
        # rightly does not move to this one.
        digits = f"{random.randrange(10**8):08d}"
        self.phone = f"{self.PREFIXES[sdk]} {digits[:4]} {digits[4:]}"
        self.phone_e164 = "+86" + self.phone.replace(" ", "")
        self.email = f"{sdk}.{run}@Example.com"
        self.name = f"{sdk.title()} Zhang"
        self.message_id = f"dedup-{sdk}-{run}"


class PythonSdk:
    """segment-analytics-python or rudder-sdk-python, used through their module-level API."""

    def __init__(self, sdk, host, write_key):
        self.sdk = sdk
        self.host = host
        self.write_key = write_key
        self.analytics = importlib.import_module(PYTHON_SDKS[sdk])
        self.version = importlib.import_module(PYTHON_SDKS[sdk] + ".version").VERSION
        self.errors = []
        self.label = f"{self.analytics.__name__} {self.version}"

    def on_error(self, error, items):
        self.errors.append(f"{error!r} for {[m.get('type') for m in items]}")

    def send_main(self, p):
        analytics = self.analytics
        # The SDK's documented module-level setup.
        analytics.write_key = self.write_key
        if self.sdk == "segment":
            analytics.host = self.host
        else:
            analytics.dataPlaneUrl = self.host  # RudderStack's name for the host
        analytics.gzip = True
        analytics.on_error = self.on_error
        analytics.max_retries = 1  # a failure should surface quickly, not back off for minutes
        analytics.sync_mode = False  # the default: a consumer thread batches to /v1/batch

        analytics.identify(p.user_id, {"name": p.name, "email": p.email, "phone": p.phone, "plan": "gold"})
        analytics.track(
            p.user_id,
            "Order Completed",
            {
                "order_id": f"o-{p.run}",
                "total": 199.90,
                "revenue": 180.00,
                "currency": "CNY",
                "products": [{"product_id": "p1", "sku": "TEA-01", "price": 199.90, "quantity": 1}],
            },
        )
        analytics.track(p.user_id, "Store Visit", {"store": "Shanghai Xintiandi"})
        analytics.page(p.user_id, "Docs", "Pricing", {"url": "https://shop.example.com/pricing"})
        analytics.screen(p.user_id, "Shop", "Home", {"tab": "featured"})
        analytics.group(p.user_id, "acme-co", {"name": "Acme Co", "industry": "retail"})
        analytics.alias(p.anonymous_id, p.user_id)
        analytics.flush()
        check(analytics.default_client.gzip is True, "the SDK's client was configured for gzip bodies")
        return self.errors

    def send_dedup(self, p):
        """The same message (explicit message_id) twice, through a synchronous, uncompressed client."""
        client = self.analytics.Client(
            self.write_key, host=self.host, sync_mode=True, gzip=False, max_retries=1, on_error=self.on_error
        )
        for attempt in (1, 2):
            try:
                client.track(p.user_id, "Store Visit", {"store": "Beijing Sanlitun"}, message_id=p.message_id)
            except Exception as e:  # sync mode raises instead of calling on_error
                self.errors.append(f"sync send #{attempt}: {e!r}")
        return self.errors

    def check_answers(self, p):
        """siyu's answer as the SDK's own transport sees it, for one batch sent twice."""
        request = importlib.import_module(self.analytics.__name__ + ".request")
        message = {
            "type": "track",
            "userId": p.user_id,
            "event": "Store Visit",
            "properties": {"store": "Hangzhou West Lake"},
            "messageId": f"{p.message_id}-raw",
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "context": {"library": {"name": self.analytics.__name__, "version": self.version}},
        }
        answers = []
        for _ in (1, 2):
            try:
                res = request.post(self.write_key, self.host, gzip=True, batch=[dict(message)])
                answers.append((res.status_code, res.json()))
            except Exception as e:
                answers.append((None, repr(e)))
        first, second = answers
        check(
            first[0] == 200 and first[1].get("success") is True and first[1].get("accepted") == 1,
            "request.post of a new batch: 200, success, accepted 1",
            first,
        )
        check(
            second[0] == 200
            and second[1].get("success") is True
            and second[1].get("accepted") == 0
            and second[1].get("duplicates") == 1,
            "request.post of the same batch again: 200, success, duplicates 1",
            second,
        )
        return 1


class NodeSdk:
    """@segment/analytics-node, driven by node/send.mjs (installed by run.sh)."""

    def __init__(self, host, write_key):
        self.host = host
        self.write_key = write_key
        with open(os.path.join(HERE, "node", "node_modules", "@segment", "analytics-node", "package.json")) as f:
            self.label = "@segment/analytics-node " + json.load(f)["version"]

    def _run(self, phase, p):
        cfg = {
            "phase": phase,
            "host": self.host,
            "writeKey": self.write_key,
            "userId": p.user_id,
            "anonymousId": p.anonymous_id,
            "name": p.name,
            "email": p.email,
            "phone": p.phone,
            "run": p.run,
            "messageId": p.message_id,
        }
        proc = subprocess.run(
            ["node", os.path.join(HERE, "node", "send.mjs"), json.dumps(cfg)],
            capture_output=True, text=True, timeout=60,
        )
        try:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return [f"node exited {proc.returncode}: {proc.stdout} {proc.stderr}"]
        print(f"  node {phase}: http statuses {out['responses']}")
        return out["errors"] + ([proc.stderr.strip()] if proc.returncode and proc.stderr.strip() else [])

    def send_main(self, p):
        return self._run("main", p)

    def send_dedup(self, p):
        return self._run("dedup", p)

    def check_answers(self, p):
        return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sdk", choices=["segment", "rudder", "node"], required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--secret-key", required=True)
    args = parser.parse_args()

    sdk = NodeSdk(args.host, args.write_key) if args.sdk == "node" else PythonSdk(args.sdk, args.host, args.write_key)
    print(f"[{args.sdk}] {sdk.label} -> {args.host}")
    api = Api(args.host, args.secret_key)
    p = Person(args.sdk)

    errors = sdk.send_main(p)
    check(not errors, "no SDK errors from identify, track x2, page, screen, group, alias", list(errors))

    # --- read back ---------------------------------------------------------------------------
    status, profile = wait_for(
        lambda: api.lookup("user_id", p.user_id),
        lambda r: r[0] == 200 and r[1].get("event_count", 0) >= 7,
    )
    if not check(status == 200, f"lookup user_id={p.user_id} -> 200", (status, profile)):
        return finish(args.sdk)
    pid = profile["id"]
    scores = profile.get("scores", {})
    traits = profile.get("traits") or {}
    check(traits.get("name") == p.name, f"traits.name == {p.name!r}", traits)
    check(scores.get("net_revenue") == 199.9, "net_revenue == 199.9", scores)
    check(scores.get("paid_orders") == 1, "paid_orders == 1", scores)
    identities = {(i["kind"], i["value"]) for i in profile.get("identities", [])}
    check(("user_id", p.user_id) in identities, f"identity user_id {p.user_id}", sorted(identities))
    check(("phone", p.phone_e164) in identities, f"identity phone {p.phone_e164}", sorted(identities))
    check(("email", p.email.lower()) in identities, f"identity email {p.email.lower()}", sorted(identities))
    check(
        ("anonymous_id", p.anonymous_id) in identities,
        f"identity anonymous_id {p.anonymous_id} (from alias)",
        sorted(identities),
    )

    status, by_anon = api.lookup("anonymous_id", p.anonymous_id)
    check(
        status == 200 and by_anon.get("id") == pid,
        f"lookup anonymous_id={p.anonymous_id} finds profile {pid}",
        (status, by_anon),
    )
    status, by_phone = api.lookup("phone", p.phone)
    check(
        status == 200 and by_phone.get("id") == pid, f"lookup phone {p.phone!r} finds profile {pid}", (status, by_phone)
    )

    status, events = api.events(pid)
    check(status == 200 and isinstance(events, list), f"GET /api/v1/profiles/{pid}/events -> 200", (status, events))
    events = events if isinstance(events, list) else []
    types = [e.get("type") for e in events]
    print(f"  event types: {types}")
    for want in ["identify", "order_paid", "store_visit", "view", "group", "alias"]:
        check(want in types, f"events include {want}", types)
    check(types.count("view") == 2, "page + screen give 2 view events", types)
    order = next((e for e in events if e.get("type") == "order_paid"), {})
    check(order.get("amount") == 199.9, "order_paid amount == 199.9 (total wins over revenue)", order)
    check(order.get("currency") == "CNY", "order_paid currency == CNY", order)
    page = next((e for e in events if e.get("type") == "view" and e.get("channel") == "web"), None)
    check(
        page is not None and (page.get("properties") or {}).get("name") == "Pricing",
        "page -> view on web with properties.name Pricing",
        events,
    )

    # --- dedup: one message_id sent twice ----------------------------------------------------
    before = len(events)
    errors = sdk.send_dedup(p)
    check(not errors, f"no SDK errors sending {p.message_id} twice", list(errors))
    status, events = wait_for(lambda: api.events(pid), lambda r: r[0] == 200 and len(r[1]) >= before + 1)
    ids = [e.get("message_id") for e in events] if status == 200 else []
    check(ids.count(p.message_id) == 1, f"message {p.message_id} stored once", ids)
    time.sleep(0.5)  # give a wrongly accepted duplicate time to show up
    status, events = api.events(pid)
    check(
        status == 200 and len(events) == before + 1,
        f"sending it twice adds exactly 1 event ({before} -> {before + 1})",
        len(events) if status == 200 else (status, events),
    )

    # --- siyu's /v1/batch answer body, as the SDK transport sees it ----------------------------
    sdk.check_answers(p)
    return finish(args.sdk)


def finish(sdk):
    if FAILURES:
        print(f"[{sdk}] FAIL: {len(FAILURES)} check(s) failed")
        return 1
    print(f"[{sdk}] PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
