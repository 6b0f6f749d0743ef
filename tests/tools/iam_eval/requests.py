#!/usr/bin/env python3
"""Maps AWS wire requests, as the test bed's recording proxy captures them, to the IAM requests AWS
authorises for them: action, resource ARN and condition context.

A capture line (JSONL) is
  {"caller": "<access key id>", "service": "ssm|ec2|elasticloadbalancing|route53|autoscaling|s3",
   "operation": "GetParameters", "method": "POST", "path": "/...", "query": "...",
   "headers": {"x-amz-target": "..."}, "body": "<request body as text>"}
and one line may stand for several IAM requests: GetParameters with three names is three
ssm:GetParameters requests, one per parameter ARN; a SecureString read with decryption also makes
SSM call KMS on the caller's behalf (a kms:Decrypt request with kms:ViaService and the parameter's
ARN as encryption context); a CreateRule with tags also needs elasticloadbalancing:AddTags for the
rule being created.

What the request does not carry is an input:
  group_tags     Auto Scaling group name -> {tag: value} (or {"arn": ..., "tags": {...}}): the
                 autoscaling:ResourceTag/* and aws:ResourceTag/* keys of lifecycle calls
  resource_tags  resource ARN -> {tag: value}: aws:ResourceTag/* (and the service's own
                 ResourceTag/*) of ELBv2 calls on existing rules and target groups
  is_secure      which parameters are SecureStrings (by default the project's schema: the
                 cluster's token, agent-token and kubeconfig/*)
Where an ARN needs an id the request lacks (an Auto Scaling group's UUID, the aws/ssm KMS key's id,
the id of a rule being created), a fixed placeholder stands in; the policies never name those ids.

Protocols: ssm is JSON 1.1 (x-amz-target "AmazonSSM.<Operation>"); ec2, elasticloadbalancing and
autoscaling are the query protocol (form-encoded "Action=...&..."); route53 is REST-XML
(POST /2013-04-01/hostedzone/{id}/rrset with a ChangeResourceRecordSetsRequest, GET .../rrset to
list, GET /2013-04-01/hostedzone/{id}); s3 is REST, path style (/bucket/key).

Usage: requests.py CAPTURE.jsonl [--group-tags F.json] [--resource-tags F.json] [--caller AKID]
                   [--account ID] [--region R] [--partition P]
prints the IAM requests as a JSON list (each with the capture's "caller" and "line" and the wire
"operation"); a line it cannot map is named on stderr and the exit status is 1.
"""
import argparse
import json
import re
import sys
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
# Placeholders for ids a request does not carry.
GROUP_UUID = "00000000-0000-0000-0000-000000000000"
SSM_KEY_ID = "00000000-0000-4000-8000-000000000000"  # the account's aws/ssm key
NEW_RULE_ID = "0000000000000000"  # a listener rule being created
DNS_SUFFIX = {"aws-cn": "amazonaws.com.cn"}

SECURE = re.compile(r"/clusters/[^/]+/(token|agent-token|kubeconfig/[^/]+)$")


def project_secure(name: str) -> bool:
    """The project's SecureString parameters (README "SSM parameters")."""
    return bool(SECURE.search(name))


@dataclass
class Settings:
    account: str = ACCOUNT
    region: str = REGION
    partition: str = PARTITION
    group_tags: Dict[str, dict] = field(default_factory=dict)
    resource_tags: Dict[str, Dict[str, str]] = field(default_factory=dict)
    is_secure: Callable[[str], bool] = project_secure

    @property
    def dns_suffix(self):
        return DNS_SUFFIX.get(self.partition, "amazonaws.com")

    def arn(self, service, resource, region=None, account=None):
        region = self.region if region is None else region
        account = self.account if account is None else account
        return f"arn:{self.partition}:{service}:{region}:{account}:{resource}"


class Unmapped(Exception):
    """A wire request this module cannot turn into IAM requests (it says why)."""


def _header(line, name):
    for k, v in (line.get("headers") or {}).items():
        if k.lower() == name:
            return v
    return None


def _form(line):
    """The query protocol's parameters: the query string and the form body, first value each."""
    params = {}
    for text in (line.get("query") or "", line.get("body") or ""):
        for k, v in urllib.parse.parse_qsl(text, keep_blank_values=True):
            params.setdefault(k, v)
    return params


def _members(params, prefix):
    """`Prefix.member.N` (or `Prefix.member.N.Sub`) values in N order."""
    found = {}
    pat = re.compile(re.escape(prefix) + r"\.member\.(\d+)$")
    for k, v in params.items():
        m = pat.match(k)
        if m:
            found[int(m.group(1))] = v
    return [found[n] for n in sorted(found)]


def _tags_of(params, prefix="Tags"):
    keys = {}
    values = {}
    pat = re.compile(re.escape(prefix) + r"\.member\.(\d+)\.(Key|Value)$")
    for k, v in params.items():
        m = pat.match(k)
        if m:
            (keys if m.group(2) == "Key" else values)[int(m.group(1))] = v
    return {keys[n]: values.get(n, "") for n in sorted(keys)}


def _request_tag_context(tags):
    if not tags:
        return {}
    ctx = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    ctx["aws:TagKeys"] = sorted(tags)
    return ctx


def _resource_tag_context(tags, service_prefix):
    ctx = {}
    for k, v in (tags or {}).items():
        ctx[f"aws:ResourceTag/{k}"] = v
        if service_prefix:
            ctx[f"{service_prefix}:ResourceTag/{k}"] = v
    return ctx


def _req(action, resource, context=None, **extra):
    out = {"action": action, "resource": resource, "context": context or {}}
    out.update(extra)
    return out


# --- SSM (JSON 1.1) ---

def ssm_parameter_arn(s: Settings, name: str) -> str:
    if name.startswith("arn:"):
        return name
    # A name's selector (name:version or name:label) is not part of its ARN.
    name = name.split(":", 1)[0]
    return s.arn("ssm", "parameter/" + name.lstrip("/"))


def ssm_key_arn(s: Settings, key_id: Optional[str]) -> str:
    if key_id and key_id.startswith("arn:") and ":key/" in key_id:
        return key_id
    if key_id and re.fullmatch(r"[0-9a-f-]{36}|mrk-[0-9a-f]{32}", key_id):
        return s.arn("kms", f"key/{key_id}")
    # No key given (the account's aws/ssm key), or an alias: the key's id is not in the request.
    return s.arn("kms", f"key/{SSM_KEY_ID}")


def _kms_via_ssm(s, action, param_arn, key_id=None):
    return _req(
        action,
        ssm_key_arn(s, key_id),
        {"kms:ViaService": f"ssm.{s.region}.{s.dns_suffix}", "kms:EncryptionContext:PARAMETER_ARN": param_arn},
        derived="KMS call SSM makes for the caller (SecureString)",
    )


def map_ssm(line, s: Settings):
    target = _header(line, "x-amz-target")
    op = target.split(".", 1)[1] if target and "." in target else line.get("operation")
    if not op:
        raise Unmapped("ssm: no x-amz-target header and no operation")
    if line.get("operation") and target and line["operation"] != op:
        raise Unmapped(f"ssm: operation {line['operation']!r} but x-amz-target {target!r}")
    body = json.loads(line.get("body") or "{}")
    action = f"ssm:{op}"
    out = []
    if op in ("GetParameters", "GetParameter", "DeleteParameter", "DeleteParameters", "GetParameterHistory", "LabelParameterVersion"):
        names = body.get("Names") if op in ("GetParameters", "DeleteParameters") else [body.get("Name")]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise Unmapped(f"{action}: no parameter name in the body")
        decrypt = bool(body.get("WithDecryption")) and op in ("GetParameters", "GetParameter", "GetParameterHistory")
        for name in names:
            arn = ssm_parameter_arn(s, name)
            out.append(_req(action, arn))
            if decrypt and s.is_secure(name.split(":", 1)[0] if not name.startswith("arn:") else name):
                out.append(_kms_via_ssm(s, "kms:Decrypt", arn))
    elif op == "GetParametersByPath":
        path = body.get("Path")
        if not isinstance(path, str) or not path:
            raise Unmapped(f"{action}: no Path in the body")
        out.append(_req(action, ssm_parameter_arn(s, path), {"ssm:Recursive": "true" if body.get("Recursive") else "false"}))
        # With decryption SSM would also decrypt whichever SecureStrings it finds: not knowable here.
        if body.get("WithDecryption"):
            out[-1]["note"] = "WithDecryption: the KMS calls for the SecureStrings found are not mapped"
    elif op == "PutParameter":
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise Unmapped(f"{action}: no Name in the body")
        arn = ssm_parameter_arn(s, name)
        ctx = {"ssm:Overwrite": "true" if body.get("Overwrite") else "false"}
        tags = {t.get("Key"): t.get("Value", "") for t in body.get("Tags") or []}
        ctx.update(_request_tag_context(tags))
        out.append(_req(action, arn, ctx))
        if body.get("Type") == "SecureString":
            out.append(_kms_via_ssm(s, "kms:Encrypt", arn, body.get("KeyId")))
    elif op in ("DescribeParameters",):
        out.append(_req(action, "*"))
    else:
        raise Unmapped(f"{action}: not mapped")
    return out


# --- EC2, ELBv2, Auto Scaling (query protocol) ---

def _query_op(line, params, service):
    op = params.get("Action") or line.get("operation")
    if not op:
        raise Unmapped(f"{service}: no Action parameter and no operation")
    if line.get("operation") and params.get("Action") and line["operation"] != params["Action"]:
        raise Unmapped(f"{service}: operation {line['operation']!r} but Action={params['Action']!r}")
    return op


def map_ec2(line, s: Settings):
    params = _form(line)
    op = _query_op(line, params, "ec2")
    if op.startswith("Describe"):
        return [_req(f"ec2:{op}", "*", {"ec2:Region": s.region})]
    raise Unmapped(f"ec2:{op}: not mapped")


def listener_rule_for_new_rule(listener_arn: str) -> str:
    """The ARN of a rule being created on a listener (its id stands in: the response has it)."""
    return listener_arn.replace(":listener/", ":listener-rule/", 1) + "/" + NEW_RULE_ID


def map_elbv2(line, s: Settings):
    params = _form(line)
    op = _query_op(line, params, "elasticloadbalancing")
    action = f"elasticloadbalancing:{op}"

    def on(arn, extra=None):
        ctx = _resource_tag_context(s.resource_tags.get(arn), "elasticloadbalancing")
        ctx.update(extra or {})
        return _req(action, arn, ctx)

    if op.startswith("Describe"):
        return [_req(action, "*")]
    if op in ("RegisterTargets", "DeregisterTargets", "ModifyTargetGroup", "ModifyTargetGroupAttributes", "DeleteTargetGroup"):
        arn = params.get("TargetGroupArn")
        if not arn:
            raise Unmapped(f"{action}: no TargetGroupArn")
        return [on(arn)]
    if op in ("ModifyRule", "DeleteRule"):
        arn = params.get("RuleArn")
        if not arn:
            raise Unmapped(f"{action}: no RuleArn")
        return [on(arn)]
    if op == "SetRulePriorities":
        found = {int(m.group(1)): v for k, v in params.items() if (m := re.match(r"RulePriorities\.member\.(\d+)\.RuleArn$", k))}
        arns = [found[n] for n in sorted(found)]
        if not arns:
            raise Unmapped(f"{action}: no RulePriorities")
        return [on(a) for a in arns]
    if op == "CreateRule":
        listener = params.get("ListenerArn")
        if not listener:
            raise Unmapped(f"{action}: no ListenerArn")
        tags = _tags_of(params)
        out = [on(listener, _request_tag_context(tags))]
        if tags:
            ctx = {"elasticloadbalancing:CreateAction": "CreateRule"}
            ctx.update(_request_tag_context(tags))
            out.append(_req("elasticloadbalancing:AddTags", listener_rule_for_new_rule(listener), ctx, derived="tags on create (the new rule's id stands in)"))
        return out
    if op in ("AddTags", "RemoveTags"):
        arns = _members(params, "ResourceArns")
        if not arns:
            raise Unmapped(f"{action}: no ResourceArns")
        if op == "AddTags":
            extra = _request_tag_context(_tags_of(params))
        else:
            keys = _members(params, "TagKeys")
            extra = {"aws:TagKeys": keys} if keys else {}
        return [on(a, extra) for a in arns]
    raise Unmapped(f"{action}: not mapped")


def autoscaling_group_arn(s: Settings, name: str) -> str:
    known = s.group_tags.get(name)
    if isinstance(known, dict) and isinstance(known.get("arn"), str):
        return known["arn"]
    return s.arn("autoscaling", f"autoScalingGroup:{GROUP_UUID}:autoScalingGroupName/{name}")


def _group_tags(s: Settings, name: str):
    known = s.group_tags.get(name)
    if isinstance(known, dict) and isinstance(known.get("tags"), dict):
        return known["tags"]
    return known if isinstance(known, dict) else None


def map_autoscaling(line, s: Settings):
    params = _form(line)
    op = _query_op(line, params, "autoscaling")
    action = f"autoscaling:{op}"
    if op.startswith("Describe"):
        return [_req(action, "*")]
    if op in ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat", "SetDesiredCapacity", "UpdateAutoScalingGroup"):
        name = params.get("AutoScalingGroupName")
        if not name:
            raise Unmapped(f"{action}: no AutoScalingGroupName")
        tags = _group_tags(s, name)
        ctx = _resource_tag_context(tags, "autoscaling")
        r = _req(action, autoscaling_group_arn(s, name), ctx)
        if tags is None:
            r["note"] = f"no tags given for group {name}: evaluated as an untagged group"
        return [r]
    raise Unmapped(f"{action}: not mapped")


# --- Route53 (REST-XML) ---

def normalize_record_name(name: str) -> str:
    """Route53's normalised form for route53:ChangeResourceRecordSetsNormalizedRecordNames: lower
    case, no trailing dot, and every character but a-z 0-9 - _ . as a \\ooo octal escape."""
    decoded = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), name)
    decoded = decoded.lower()
    if decoded.endswith("."):
        decoded = decoded[:-1]
    return "".join(c if re.match(r"[a-z0-9_.-]", c) else "\\%03o" % ord(c) for c in decoded)


def _local(tag):
    return tag.rsplit("}", 1)[-1]


def change_batch_context(xml_text: str) -> dict:
    """The three ChangeResourceRecordSets condition keys of a ChangeResourceRecordSetsRequest."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise Unmapped(f"route53:ChangeResourceRecordSets: the body is not XML: {e}") from None
    names, types, actions = [], [], []
    for change in root.iter():
        if _local(change.tag) != "Change":
            continue
        action = rrs_name = rrs_type = None
        for child in change:
            if _local(child.tag) == "Action":
                action = (child.text or "").strip()
            elif _local(child.tag) == "ResourceRecordSet":
                for f in child:
                    if _local(f.tag) == "Name":
                        rrs_name = (f.text or "").strip()
                    elif _local(f.tag) == "Type":
                        rrs_type = (f.text or "").strip()
        if not (action and rrs_name and rrs_type):
            raise Unmapped("route53:ChangeResourceRecordSets: a Change without Action, Name or Type")
        for value, into in ((normalize_record_name(rrs_name), names), (rrs_type.upper(), types), (action.upper(), actions)):
            if value not in into:
                into.append(value)
    if not actions:
        raise Unmapped("route53:ChangeResourceRecordSets: no Change in the body")
    return {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": names,
        "route53:ChangeResourceRecordSetsRecordTypes": types,
        "route53:ChangeResourceRecordSetsActions": actions,
    }


ZONE_PATH = re.compile(r"^/2013-04-01/hostedzone/(?P<id>[^/]+)(?P<rrset>/rrset/?)?$")


def map_route53(line, s: Settings):
    path = line.get("path") or ""
    method = (line.get("method") or "GET").upper()
    op = line.get("operation")
    zone_arn = None
    m = ZONE_PATH.match(path)
    if m:
        # The id is one path segment; an id given as "/hostedzone/Z..." arrives percent-encoded.
        zone_id = urllib.parse.unquote(m.group("id")).lstrip("/")
        if zone_id.startswith("hostedzone/"):
            zone_id = zone_id[len("hostedzone/"):]
        zone_arn = f"arn:{s.partition}:route53:::hostedzone/{zone_id}"
        inferred = ("ChangeResourceRecordSets" if method == "POST" else "ListResourceRecordSets") if m.group("rrset") else (
            "GetHostedZone" if method == "GET" else None)
    elif path.rstrip("/") in ("/2013-04-01/hostedzone", "/2013-04-01/hostedzonesbyname"):
        inferred = "ListHostedZones" if path.rstrip("/").endswith("hostedzone") else "ListHostedZonesByName"
    else:
        inferred = None
    op = op or inferred
    if not op or (inferred and op != inferred):
        raise Unmapped(f"route53: {method} {path}: operation {line.get('operation')!r}, path says {inferred!r}")
    action = f"route53:{op}"
    if op == "ChangeResourceRecordSets":
        return [_req(action, zone_arn, change_batch_context(line.get("body") or ""))]
    if op in ("ListResourceRecordSets", "GetHostedZone"):
        return [_req(action, zone_arn)]
    if op in ("ListHostedZones", "ListHostedZonesByName"):
        return [_req(action, "*")]
    raise Unmapped(f"{action}: not mapped")


# --- S3 (REST, path style) ---

S3_ACTION = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "GetBucketLocation": "s3:GetBucketLocation",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
}


def _s3_infer(method, key, query):
    if not key:
        if method == "HEAD":
            return "HeadBucket"
        if method == "GET" and "location" in query:
            return "GetBucketLocation"
        if method == "GET":
            return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return None
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "PUT" and "uploadId" in query:
        return "UploadPart"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(method)


def map_s3(line, s: Settings):
    raw_path = line.get("path") or "/"
    bucket, _, key = raw_path.lstrip("/").partition("/")
    bucket = urllib.parse.unquote(bucket)
    key = urllib.parse.unquote(key)
    if not bucket:
        raise Unmapped(f"s3: no bucket in the path {raw_path!r} (only path-style requests are mapped)")
    query = dict(urllib.parse.parse_qsl(line.get("query") or "", keep_blank_values=True))
    method = (line.get("method") or "GET").upper()
    inferred = _s3_infer(method, key, query)
    op = line.get("operation") or inferred
    if op not in S3_ACTION:
        raise Unmapped(f"s3: {method} {raw_path}: operation {op!r} not mapped")
    action = S3_ACTION[op]
    bucket_arn = f"arn:{s.partition}:s3:::{bucket}"
    if action in ("s3:ListBucket", "s3:GetBucketLocation"):
        ctx = {}
        if op.startswith("ListObjects"):
            for q, k in (("prefix", "s3:prefix"), ("delimiter", "s3:delimiter"), ("max-keys", "s3:max-keys")):
                if q in query:
                    ctx[k] = query[q]
        return [_req(action, bucket_arn, ctx)]
    if op == "DeleteObjects":
        try:
            root = ET.fromstring(line.get("body") or "")
        except ET.ParseError as e:
            raise Unmapped(f"s3:DeleteObjects: the body is not XML: {e}") from None
        keys = [(k.text or "") for k in root.iter() if _local(k.tag) == "Key"]
        if not keys:
            raise Unmapped("s3:DeleteObjects: no Key in the body")
        return [_req(action, f"{bucket_arn}/{k}") for k in keys]
    if not key:
        raise Unmapped(f"s3:{op}: no object key in the path {raw_path!r}")
    return [_req(action, f"{bucket_arn}/{key}")]


MAPPERS = {
    "ssm": map_ssm,
    "ec2": map_ec2,
    "elasticloadbalancing": map_elbv2,
    "autoscaling": map_autoscaling,
    "route53": map_route53,
    "s3": map_s3,
}


def iam_requests(line: dict, settings: Settings = None) -> List[dict]:
    """The IAM requests of one capture line, each with the line's caller and wire operation."""
    s = settings or Settings()
    service = line.get("service")
    if service not in MAPPERS:
        raise Unmapped(f"service {service!r} not mapped")
    out = MAPPERS[service](line, s)
    wire = f"{service}:{line.get('operation') or '?'}"
    for r in out:
        r["caller"] = line.get("caller")
        r["operation"] = wire
    return out


def from_capture(lines, settings: Settings = None, caller: Optional[str] = None):
    """(IAM requests, [(line number, why)] of lines not mapped) of a JSONL capture."""
    requests, unmapped = [], []
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as e:
            unmapped.append((n, f"not JSON: {e}"))
            continue
        if caller is not None and line.get("caller") != caller:
            continue
        try:
            for r in iam_requests(line, settings):
                r["line"] = n
                requests.append(r)
        except (Unmapped, json.JSONDecodeError) as e:
            unmapped.append((n, str(e)))
    return requests, unmapped


def load_json(path):
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture")
    p.add_argument("--group-tags", help="JSON: Auto Scaling group name -> {tag: value}")
    p.add_argument("--resource-tags", help="JSON: resource ARN -> {tag: value}")
    p.add_argument("--caller", help="only this access key id's lines")
    p.add_argument("--account", default=ACCOUNT)
    p.add_argument("--region", default=REGION)
    p.add_argument("--partition", default=PARTITION)
    a = p.parse_args(argv)
    s = Settings(a.account, a.region, a.partition, load_json(a.group_tags), load_json(a.resource_tags))
    with open(a.capture, encoding="utf-8") as fh:
        requests, unmapped = from_capture(fh, s, a.caller)
    json.dump(requests, sys.stdout, indent=1)
    sys.stdout.write("\n")
    for n, why in unmapped:
        print(f"requests: {a.capture}:{n}: {why}", file=sys.stderr)
    return 1 if unmapped else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
