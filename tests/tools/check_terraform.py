"""Static checks of packaging/terraform with an HCL2 parser (no AWS, no terraform binary).

Usage: check_terraform.py DIR   — exits 1 naming each problem.
"""
import glob
import os
import re
import sys

import hcl2


def unquote(v):
    if isinstance(v, str) and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1]
    if isinstance(v, dict):
        return {unquote(k): unquote(x) for k, x in v.items()}
    if isinstance(v, list):
        return [unquote(x) for x in v]
    return v


def main(d):
    problems = []
    text = ""
    docs = {}
    for f in sorted(glob.glob(os.path.join(d, "*.tf"))):
        with open(f) as fh:
            text += fh.read()
        with open(f) as fh:
            docs[f] = unquote(hcl2.load(fh))
    resources = {}
    variables = set()
    for doc in docs.values():
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    resources[(rtype, name)] = body
        for block in doc.get("variable", []):
            variables.update(block.keys())

    lt = resources.get(("aws_launch_template", "role"))
    if not lt:
        problems.append("no aws_launch_template.role")
    else:
        mo = (lt.get("metadata_options") or [{}])[0]
        if mo.get("http_tokens") != "required":
            problems.append("launch template: metadata_options.http_tokens must be \"required\" (IMDSv2 only)")
        if mo.get("instance_metadata_tags") != "enabled":
            problems.append("launch template: metadata_options.instance_metadata_tags must be \"enabled\"")
        if "cloud-init" not in str(lt.get("user_data", "")):
            problems.append("launch template: user_data must come from packaging/cloud-init")
    asg = resources.get(("aws_autoscaling_group", "role"))
    if not asg:
        problems.append("no aws_autoscaling_group.role")
    else:
        hooks = asg.get("initial_lifecycle_hook", [])
        if not any(h.get("lifecycle_transition") == "autoscaling:EC2_INSTANCE_TERMINATING" for h in hooks):
            problems.append("ASG: a terminating lifecycle hook is required so the agent can leave in order")
        if "target_group_arns" in asg:
            problems.append("ASG: target_group_arns would register instances before they can serve")
        tags = {t.get("key"): t for t in asg.get("tag", [])}
        for k in ("Cluster", "Role"):
            if k not in tags or tags[k].get("propagate_at_launch") is not True:
                problems.append(f"ASG: tag {k} must propagate at launch")
    fn = resources.get(("aws_lambda_function", "coordinator"))
    if not fn or fn.get("runtime") != "provided.al2023" or fn.get("handler") != "bootstrap":
        problems.append("coordinator Lambda must use the provided.al2023 custom runtime with handler bootstrap")
    rule = resources.get(("aws_cloudwatch_event_rule", "spec_changes"))
    if not rule or "aws.ssm" not in str(rule.get("event_pattern", "")):
        problems.append("coordinator: an EventBridge rule for SSM Parameter Store Change events must invoke it (it keeps specs warm)")
    for v in sorted(set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", text)) - variables):
        problems.append(f"var.{v} is used but not declared")
    for ref in re.findall(r'(?:file|filebase64|templatefile)\("\$\{path\.module\}/([^"]+)"', text):
        if not os.path.exists(os.path.join(d, ref)):
            problems.append(f"file {ref} referenced but missing")
    for p in problems:
        print(f"terraform: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
