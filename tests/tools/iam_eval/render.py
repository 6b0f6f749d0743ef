#!/usr/bin/env python3
"""Renders packaging/iam's policy templates (*.tftpl, Terraform `templatefile` syntax) without
Terraform, for the offline IAM checks in this directory.

Only the subset of the template language the policies use is accepted, and anything else is
refused (never guessed at):

  ${name}              the string variable `name` (a number or bool is written as Terraform
                       writes it; a list or map is an error, as in Terraform)
  ${jsonencode(name)}  `name` as Terraform's jsonencode writes it (compact; <, >, & escaped)
  $${  %%{             a literal `${` / `%{`

A missing variable is an error, as in Terraform. The rendered text must be JSON.
tests/tools/iam_eval/test_render.py checks the output against `terraform console` where the
terraform binary is installed.

Variables checked here, as the Terraform modules check them:
  prefix        the SSM prefix exactly as the programs' --prefix / K3S_ASG_PREFIX: a leading '/',
                no trailing '/', e.g. /k3s-asg; the templates write `parameter${prefix}/...`
  api_hostname  Route53's normalised form: lower case, no trailing dot
  *_arns        lists, not empty (an IAM Resource may not be an empty list)

Usage:
  render.py TEMPLATE [--vars VARS.json] [--var NAME=VALUE ...] [--pretty] [-o OUT]
  render.py --examples [--check]
      renders each packaging/iam/*.tftpl with example-vars.json into
      packaging/iam/examples/<name>.json; --check compares instead of writing and exits 1 on a
      difference (the examples are what the tests lint with parliament).
"""
import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
IAM_DIR = os.path.join(ROOT, "packaging", "iam")
EXAMPLES_DIR = os.path.join(IAM_DIR, "examples")
EXAMPLE_VARS = os.path.join(HERE, "example-vars.json")

IDENT = r"[A-Za-z_][A-Za-z0-9_-]*"
EXPR = re.compile(rf"^\s*(?:(?P<name>{IDENT})|jsonencode\(\s*(?P<enc>{IDENT})\s*\))\s*$")
PREFIX = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")


class TemplateError(Exception):
    pass


def tf_jsonencode(value):
    """Terraform's jsonencode: compact, UTF-8 kept, and <, >, & escaped as \\u003c etc."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def tf_string(name, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return value
    raise TemplateError(f"${{{name}}}: a {type(value).__name__} cannot be interpolated as a string; use ${{jsonencode({name})}}")


def check_vars(variables):
    """The checks the Terraform modules make on the same inputs."""
    problems = []
    prefix = variables.get("prefix")
    if prefix is not None and (not isinstance(prefix, str) or not PREFIX.match(prefix)):
        problems.append(f"prefix {prefix!r}: give it as the programs' --prefix: a leading '/', no trailing '/', e.g. /k3s-asg")
    host = variables.get("api_hostname")
    if host is not None and (not isinstance(host, str) or host != host.lower().rstrip(".") or not host):
        problems.append(f"api_hostname {host!r}: give Route53's normalised form (lower case, no trailing dot)")
    for name, value in variables.items():
        if name.endswith("_arns") and (not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value)):
            problems.append(f"{name}: a non-empty list of ARNs")
    if problems:
        raise TemplateError("; ".join(problems))


def render_text(text, variables, where="template"):
    check_vars(variables)
    out = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            out.append("${")
            i += 3
        elif text.startswith("%%{", i):
            out.append("%{")
            i += 3
        elif text.startswith("%{", i):
            line = text.count("\n", 0, i) + 1
            raise TemplateError(f"{where}:{line}: template directives (%{{...}}) are not supported here")
        elif text.startswith("${", i):
            end = text.find("}", i + 2)
            line = text.count("\n", 0, i) + 1
            if end < 0:
                raise TemplateError(f"{where}:{line}: unterminated ${{")
            m = EXPR.match(text[i + 2:end])
            if not m:
                raise TemplateError(f"{where}:{line}: unsupported expression ${{{text[i + 2:end]}}} (only ${{name}} and ${{jsonencode(name)}})")
            name = m.group("name") or m.group("enc")
            if name not in variables:
                raise TemplateError(f"{where}:{line}: vars map does not contain key {name!r}")
            value = variables[name]
            out.append(tf_jsonencode(value) if m.group("enc") else tf_string(name, value))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    rendered = "".join(out)
    try:
        json.loads(rendered)
    except json.JSONDecodeError as e:
        raise TemplateError(f"{where}: the rendered policy is not JSON: {e}") from None
    return rendered


def render_file(path, variables):
    with open(path, encoding="utf-8") as fh:
        return render_text(fh.read(), variables, where=os.path.relpath(path, ROOT))


def render_policy(path, variables):
    """The rendered template as a parsed policy document."""
    return json.loads(render_file(path, variables))


def load_vars(path=EXAMPLE_VARS, overrides=()):
    with open(path, encoding="utf-8") as fh:
        variables = json.load(fh)
    variables.pop("//", None)
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep:
            raise TemplateError(f"--var {item!r}: NAME=VALUE (a JSON list or object for VALUE is parsed as JSON)")
        variables[name] = json.loads(value) if value[:1] in "[{" else value
    return variables


def pretty(text):
    return json.dumps(json.loads(text), indent=2) + "\n"


def templates():
    return sorted(f for f in os.listdir(IAM_DIR) if f.endswith(".json.tftpl"))


def examples(check):
    variables = load_vars()
    stale = []
    for t in templates():
        want = pretty(render_file(os.path.join(IAM_DIR, t), variables))
        out = os.path.join(EXAMPLES_DIR, t[: -len(".tftpl")])
        have = None
        if os.path.exists(out):
            with open(out, encoding="utf-8") as fh:
                have = fh.read()
        if have == want:
            continue
        if check:
            stale.append(os.path.relpath(out, ROOT))
        else:
            os.makedirs(EXAMPLES_DIR, exist_ok=True)
            with open(out, "w", encoding="utf-8") as fh:
                fh.write(want)
            print(f"wrote {os.path.relpath(out, ROOT)}", file=sys.stderr)
    if stale:
        print("stale rendered examples (run tests/tools/iam_eval/render.py --examples): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("template", nargs="?")
    p.add_argument("--vars", default=EXAMPLE_VARS, help="JSON object of the template's variables (default: example-vars.json)")
    p.add_argument("--var", action="append", default=[], help="NAME=VALUE, over --vars")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.add_argument("-o", "--out")
    p.add_argument("--examples", action="store_true")
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.examples:
            return examples(a.check)
        if not a.template:
            p.error("a TEMPLATE, or --examples")
        text = render_file(a.template, load_vars(a.vars, a.var))
        text = pretty(text) if a.pretty else text
        if a.out:
            with open(a.out, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
        return 0
    except (TemplateError, OSError, json.JSONDecodeError) as e:
        print(f"render: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
