"""Static checks of packaging/terraform with an HCL2 parser (no AWS, no terraform binary).

Usage: check_terraform.py DIR   — DIR and every module below it (each directory holding .tf
files); exits 1 naming each problem.
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


def modules(d):
    """{module directory: (its .tf text, its parsed files)} for d and every directory below it."""
    found = {}
    for f in sorted(glob.glob(os.path.join(d, "**", "*.tf"), recursive=True)):
        if f"{os.sep}.terraform{os.sep}" in f:
            continue
        text, docs = found.setdefault(os.path.dirname(f), ("", []))
        with open(f) as fh:
            text += fh.read()
        with open(f) as fh:
            docs.append(unquote(hcl2.load(fh)))
        found[os.path.dirname(f)] = (text, docs)
    return found


def main(d):
    problems = []
    mods = modules(d)
    if not mods:
        problems.append(f"no .tf files under {d}")
    resources = {}
    alltext = ""
    for mdir, (text, docs) in mods.items():
        alltext += text
        rel = os.path.relpath(mdir, d)
        variables = set()
        for doc in docs:
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        resources[(rtype, name)] = body
            for block in doc.get("variable", []):
                variables.update(block.keys())
        for v in sorted(set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", text)) - variables):
            problems.append(f"{rel}: var.{v} is used but not declared")
        # Files read relative to the module; an interpolation in the path (a choice of files)
        # must match at least one.
        for ref in re.findall(r'(?:file|filebase64|templatefile)\("\$\{path\.module\}/([^"]+)"', text):
            pattern = re.sub(r"\$\{[^}]*\}", "*", ref)
            if not glob.glob(os.path.join(mdir, pattern)):
                problems.append(f"{rel}: file {ref} referenced but missing")
        for src in re.findall(r'source\s*=\s*"(\.{1,2}/[^"]*)"', text):
            if not glob.glob(os.path.join(mdir, src, "*.tf")):
                problems.append(f"{rel}: module source {src} has no .tf files")

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
        if not lt.get("vpc_security_group_ids"):
            problems.append("launch template: vpc_security_group_ids must give the instances the k3s security groups")
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
    if fn:
        vpc = (fn.get("vpc_config") or [{}])[0]
        if not vpc.get("subnet_ids") or not vpc.get("security_group_ids"):
            problems.append("coordinator Lambda: vpc_config with subnet_ids and security_group_ids (its health probes reach private addresses)")
        if fn.get("reserved_concurrent_executions") != 1:
            problems.append("coordinator Lambda: reserved_concurrent_executions = 1 (one reconcile at a time)")
        if "filebase64sha256" not in str(fn.get("source_code_hash", "")):
            problems.append("coordinator Lambda: source_code_hash = filebase64sha256 of the zip (else a new zip is not deployed)")
    rule = resources.get(("aws_cloudwatch_event_rule", "spec_changes"))
    if not rule or "aws.ssm" not in str(rule.get("event_pattern", "")):
        problems.append("coordinator: an EventBridge rule for SSM Parameter Store Change events must invoke it (it keeps specs warm)")
    for (rtype, name), body in resources.items():
        pattern = str(body.get("event_pattern", ""))
        if rtype == "aws_cloudwatch_event_rule" and ("aws.autoscaling" in pattern or "aws.ec2" in pattern):
            if "aws.ec2" in pattern or "AutoScalingGroupName" not in pattern:
                problems.append(f"event rule {name}: Auto Scaling/EC2 events must be scoped to this project's groups (detail.AutoScalingGroupName)")
    if not any(t == "aws_cloudwatch_event_rule" and "AutoScalingGroupName" in str(b.get("event_pattern", "")) for (t, _), b in resources.items()):
        problems.append("coordinator: an EventBridge rule for the clusters' Auto Scaling events must invoke it")
    if not any(t == "aws_ssm_parameter" and "/regions/" in str(b.get("name", "")) for (t, _), b in resources.items()):
        problems.append("region: the region spec parameter {prefix}/regions/{region} is missing")
    if not any(t == "aws_route53_record" and str(b.get("name", "")).startswith("*.") for (t, _), b in resources.items()):
        problems.append("region: the wildcard record *.{region}.{zone} → the ALB is missing")
    # k3s's inbound rules: supervisor/API, etcd, flannel VXLAN, kubelet.
    for port, what in (("6443", "supervisor and API"), ("2379", "etcd"), ("8472", "flannel VXLAN"), ("10250", "kubelet")):
        if not re.search(rf"\b{port}\b", alltext):
            problems.append(f"security groups: no rule for k3s's {what} port {port}")
    for arn in sorted(set(re.findall(r"arn:aws:[a-z0-9-]+:[^\"\s]*", alltext))):
        problems.append(f"ARN {arn} names the aws partition: use data.aws_partition")
    for p in problems:
        print(f"terraform: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
