#!/usr/bin/env python3
"""Proves a capture of real AWS calls was allowed, call by call, by each caller's scoped policies:
the complement of the denial table (what the programs did is allowed; what they must not do is
denied).

Maps each line of the test bed's JSONL capture to IAM requests (requests.py), evaluates each
caller's requests against that caller's rendered policies (evaluate.mjs), and prints the requests
that were not allowed, or could not be mapped or evaluated.

Usage:
  capture_check.py CAPTURE.jsonl --caller AKID=POLICY.json[,MORE.json] [--caller ...]
                   [--group-tags F.json] [--resource-tags F.json]
                   [--account ID] [--region R] [--partition P] [--all]
Render the policies first with the test bed's own values (target group ARNs, zone ids, listener
ARNs), e.g. `render.py packaging/iam/node-policy.json.tftpl --vars testbed-vars.json -o node.json`.
Lines of callers not named are skipped (counted). --all prints every request, not only failures.
Exit status: 0 when every request of the named callers was allowed, 1 otherwise, 2 when the
evaluator is not installed (scripts/setup-iam-eval).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import denial_table  # noqa: E402
import requests as wire  # noqa: E402  (this directory's requests.py, not the HTTP library)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture")
    p.add_argument("--caller", action="append", default=[], help="AKID=POLICY.json[,MORE.json]")
    p.add_argument("--group-tags")
    p.add_argument("--resource-tags")
    p.add_argument("--account", default=wire.ACCOUNT)
    p.add_argument("--region", default=wire.REGION)
    p.add_argument("--partition", default=wire.PARTITION)
    p.add_argument("--all", action="store_true")
    p.add_argument("--node", default="node")
    a = p.parse_args(argv)
    if not denial_table.evaluator_installed():
        print("capture_check: the evaluator is not installed: run scripts/setup-iam-eval", file=sys.stderr)
        return 2
    callers = {}
    for item in a.caller:
        akid, sep, files = item.partition("=")
        if not sep or not files:
            p.error(f"--caller {item!r}: AKID=POLICY.json[,MORE.json]")
        callers[akid] = files.split(",")
    if not callers:
        p.error("name at least one --caller")
    s = wire.Settings(a.account, a.region, a.partition, wire.load_json(a.group_tags), wire.load_json(a.resource_tags))
    with open(a.capture, encoding="utf-8") as fh:
        lines = fh.readlines()
    rows, total, allowed, not_mapped, skipped = [], 0, 0, 0, 0
    for akid, policies in callers.items():
        reqs, unmapped = wire.from_capture(lines, s, caller=akid)
        for n, why in unmapped:
            not_mapped += 1
            rows.append((akid, n, "", "", f"**not mapped**: {why}", ""))
        if not reqs:
            continue
        plain = [{"action": r["action"], "resource": r["resource"], "context": r["context"]} for r in reqs]
        for r, res in zip(reqs, denial_table.evaluate(policies, plain, a.node)):
            total += 1
            ok = res.get("allowed") is True and not res.get("ignored_context_keys")
            if res.get("allowed") is None:
                got = f"**error**: {res.get('error')}"
            elif res.get("ignored_context_keys"):
                got = f"**context keys not applicable**: {', '.join(res['ignored_context_keys'])}"
            else:
                got = "allowed" if res["allowed"] else f"**{res['decision']}**"
            allowed += 1 if ok else 0
            if a.all or not ok:
                request = f"`{r['action']}` `{r['resource']}`"
                ctx = denial_table.short_context(r["context"])
                if ctx:
                    request += f" ({ctx})"
                if r.get("derived"):
                    request += f" [{r['derived']}]"
                rows.append((akid, r["line"], r["operation"], request, got, ", ".join(x.split("#", 1)[1] for x in res.get("statements") or [])))
    for text in lines:
        if text.strip() and not any(f'"caller": "{k}"' in text or f'"caller":"{k}"' in text for k in callers):
            skipped += 1
    print("| caller | line | wire call | IAM request | result | allowed by |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(denial_table.cell(x) for x in row) + " |")
    print()
    print(f"{allowed} of {total} IAM requests allowed, {total - allowed} not; {not_mapped} capture lines not mapped; {skipped} lines of other callers skipped")
    return 1 if allowed < total or not_mapped else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
