#!/usr/bin/env python3
"""The denial table: what a compromised instance or coordinator must NOT be able to do, proven by
evaluating requests against the rendered policies (evaluate.mjs, @cloud-copilot/iam-simulate), not
by reading them.

Renders each role's policies (denials.json "roles": packaging/iam files, templates rendered with
example-vars.json), evaluates every case of denials.json (each expected "denied", or "allowed" as
a control that the policies still grant what the programs need, so a policy that denies
everything cannot pass), and prints a Markdown table: request, role, expected, result, and the
statement that decided.

Usage: denial_table.py [--cases denials.json] [--vars example-vars.json] [-o TABLE.md]
                       [--doc docs/iam.md [--check]]
  --doc writes the table into the document between the lines <!-- denial-table:begin --> and
  <!-- denial-table:end -->; with --check it only compares (exit 1 when the document is stale).
Exit status: 0 when every result is as expected, 1 when any is not (or could not be evaluated, or
named a condition key that does not apply to its action), 2 when the evaluator is not installed
(scripts/setup-iam-eval).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import render  # noqa: E402

EVALUATOR = os.path.join(HERE, "evaluate.mjs")
INSTALLED = os.path.join(HERE, "node_modules", "@cloud-copilot", "iam-simulate", "package.json")


def evaluator_installed():
    return os.path.exists(INSTALLED)


def write_role_policies(roles, variables, into, iam_dir=render.IAM_DIR):
    """{role: [rendered policy files]} (templates rendered; plain .json files rendered too, as
    Terraform renders them with templatefile)."""
    files = {}
    for role, names in roles.items():
        files[role] = []
        for name in names:
            text = render.render_file(os.path.join(iam_dir, name), variables)
            out = os.path.join(into, name[: -len(".tftpl")] if name.endswith(".tftpl") else name)
            with open(out, "w", encoding="utf-8") as fh:
                fh.write(text)
            files[role].append(out)
    return files


def evaluate(policy_files, requests, node="node"):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(requests, fh)
        path = fh.name
    try:
        cmd = [node, EVALUATOR, policy_files[0], path]
        for extra in policy_files[1:]:
            cmd += ["--policy", extra]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode not in (0, 1):
            raise RuntimeError(f"evaluate.mjs: {out.stderr.strip()}")
        results = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        if len(results) != len(requests):
            raise RuntimeError(f"evaluate.mjs answered {len(results)} of {len(requests)} requests: {out.stderr.strip()}")
        return results
    finally:
        os.unlink(path)


def short_context(context):
    parts = []
    for k, v in (context or {}).items():
        key = k.split(":", 1)[1] if k.startswith(("route53:", "kms:", "autoscaling:", "ssm:", "elasticloadbalancing:")) else k
        key = key.replace("ChangeResourceRecordSets", "")
        val = ",".join(v) if isinstance(v, list) else str(v)
        parts.append(f"{key}={val}")
    return "; ".join(parts)


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def run(cases_path, vars_path, node="node", iam_dir=render.IAM_DIR):
    with open(cases_path, encoding="utf-8") as fh:
        doc = json.load(fh)
    variables = render.load_vars(vars_path)
    rows, bad = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        policies = write_role_policies(doc["roles"], variables, tmp, iam_dir)
        by_role = {}
        for i, case in enumerate(doc["cases"], 1):
            if case["role"] not in policies:
                raise SystemExit(f"denial_table: case {i}: unknown role {case['role']!r}")
            if case["expect"] not in ("denied", "allowed"):
                raise SystemExit(f"denial_table: case {i}: expect is 'denied' or 'allowed'")
            by_role.setdefault(case["role"], []).append((i, case))
        results = {}
        for role, items in by_role.items():
            reqs = [{"action": c["action"], "resource": c["resource"], "context": c.get("context", {})} for _, c in items]
            for (i, _), res in zip(items, evaluate(policies[role], reqs, node)):
                results[i] = res
    notes = []
    for i, case in enumerate(doc["cases"], 1):
        res = results[i]
        if res.get("allowed") is None:
            got, ok = f"error: {res.get('error')}", False
        else:
            got = "allowed" if res["allowed"] else ("denied (explicit)" if res["decision"] == "ExplicitlyDenied" else "denied")
            ok = got.startswith(case["expect"]) and not res.get("ignored_context_keys")
        if res.get("ignored_context_keys"):
            got += f" (context keys not applicable: {', '.join(res['ignored_context_keys'])})"
        bad += 0 if ok else 1
        request = f"`{case['action']}` `{case['resource']}`"
        ctx = short_context(case.get("context"))
        if ctx:
            request += f" ({ctx})"
        decided = ", ".join(s.split("#", 1)[1] for s in res.get("statements") or []) or ("no statement allows" if res.get("allowed") is False else "")
        for note in res.get("notes") or []:
            if note not in notes:
                notes.append(note)
            got += f" [{notes.index(note) + 1}]"
        rows.append((i, case["why"], request, case["role"], case["expect"], got if ok else f"**{got}** ✗", decided))
    lines = [
        "| # | case | request | role | expected | result | decided by |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    denied = sum(1 for c in doc["cases"] if c["expect"] == "denied")
    lines.append("")
    for n, note in enumerate(notes, 1):
        lines.append(f"[{n}] evaluate.mjs: {note}.  ")
    if notes:
        lines.append("")
    lines.append(f"{len(rows) - bad} of {len(rows)} as expected ({denied} must be denied, {len(rows) - denied} allowed as controls); {bad} not")
    return "\n".join(lines) + "\n", bad


BEGIN, END = "<!-- denial-table:begin -->", "<!-- denial-table:end -->"


def with_table(doc_text, table):
    """The document with `table` between its markers."""
    head, sep, rest = doc_text.partition(BEGIN + "\n")
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"denial_table: the document has no {BEGIN} ... {END} block")
    return head + BEGIN + "\n" + table + END + tail


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=os.path.join(HERE, "denials.json"))
    p.add_argument("--vars", default=render.EXAMPLE_VARS)
    p.add_argument("--node", default="node")
    p.add_argument("-o", "--out")
    p.add_argument("--doc", help="a Markdown document to write the table into (between its markers)")
    p.add_argument("--check", action="store_true", help="with --doc: compare, do not write")
    a = p.parse_args(argv)
    if not evaluator_installed():
        print("denial_table: the evaluator is not installed: run scripts/setup-iam-eval", file=sys.stderr)
        return 2
    table, bad = run(a.cases, a.vars, a.node)
    if a.doc:
        with open(a.doc, encoding="utf-8") as fh:
            text = fh.read()
        updated = with_table(text, table)
        if a.check:
            if updated != text:
                print(f"denial_table: the table in {a.doc} is stale: run tests/tools/iam_eval/denial_table.py --doc {a.doc}", file=sys.stderr)
                return 1
            return 1 if bad else 0
        with open(a.doc, "w", encoding="utf-8") as fh:
            fh.write(updated)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            fh.write(table)
    sys.stdout.write(table)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
