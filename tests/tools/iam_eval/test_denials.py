"""The denial table passes against packaging/iam, and can fail.

Needs the evaluator (scripts/setup-iam-eval); skipped, saying so, without it.
Run: python3 -m unittest discover -s tests/tools/iam_eval -t tests/tools/iam_eval
"""
import io
import json
import os
import shutil
import tempfile
import unittest
from contextlib import redirect_stdout

import capture_check

import denial_table
import render

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "denials.json")
# K3S_ASG_REQUIRE_IAM_EVAL=1 (CI, after scripts/setup-iam-eval): a missing evaluator fails these
# tests instead of skipping them.
RUN = denial_table.evaluator_installed() or os.environ.get("K3S_ASG_REQUIRE_IAM_EVAL") == "1"

# The single agent policy this project had before per-role policies (any worker could read the
# server token), as a node template: the table must catch it.
BROAD_NODE = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "Read", "Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": "arn:aws:ssm:*:*:parameter/k3s-asg/clusters/*"},
        {"Sid": "Write", "Effect": "Allow", "Action": ["ssm:PutParameter"], "Resource": "arn:aws:ssm:*:*:parameter/k3s-asg/clusters/*/token"},
        {"Sid": "Kms", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:Encrypt"], "Resource": "arn:aws:kms:*:*:key/*", "Condition": {"StringLike": {"kms:ViaService": "ssm.*.amazonaws.com"}}},
        {"Sid": "Dns", "Effect": "Allow", "Action": ["route53:ListResourceRecordSets", "route53:ChangeResourceRecordSets"], "Resource": "arn:aws:route53:::hostedzone/*"},
        {"Sid": "Tg", "Effect": "Allow", "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"], "Resource": "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*"},
        {"Sid": "Life", "Effect": "Allow", "Action": ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
         "Resource": "arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*", "Condition": {"Null": {"autoscaling:ResourceTag/Cluster": "false"}}},
        {"Sid": "Describe", "Effect": "Allow", "Action": ["ec2:DescribeTags"], "Resource": "*"},
    ],
}


@unittest.skipUnless(RUN, "the evaluator is not installed (scripts/setup-iam-eval): denial table not run")
class DenialTable(unittest.TestCase):
    def test_every_case_is_as_expected(self):
        table, bad = denial_table.run(CASES, render.EXAMPLE_VARS)
        self.assertEqual(bad, 0, table)
        with open(CASES) as fh:
            doc = json.load(fh)
        self.assertGreaterEqual(sum(1 for c in doc["cases"] if c["expect"] == "denied"), 40)
        self.assertTrue({"node", "control-plane", "coordinator"} <= {c["role"] for c in doc["cases"] if c["expect"] == "allowed"})

    def test_the_copy_in_docs_is_current(self):
        table, _ = denial_table.run(CASES, render.EXAMPLE_VARS)
        doc = os.path.join(render.ROOT, "docs", "iam.md")
        with open(doc, encoding="utf-8") as fh:
            text = fh.read()
        self.assertEqual(denial_table.with_table(text, table), text, "run tests/tools/iam_eval/denial_table.py --doc docs/iam.md")

    def test_the_table_catches_the_old_shared_agent_policy(self):
        with tempfile.TemporaryDirectory() as d:
            for f in os.listdir(render.IAM_DIR):
                if os.path.isfile(os.path.join(render.IAM_DIR, f)):
                    shutil.copy(os.path.join(render.IAM_DIR, f), d)
            with open(os.path.join(d, "node-policy.json.tftpl"), "w") as fh:
                json.dump(BROAD_NODE, fh)
            table, bad = denial_table.run(CASES, render.EXAMPLE_VARS, iam_dir=d)
        self.assertGreater(bad, 10, table)
        row = next(line for line in table.splitlines() if "| a node reads the k3s server token |" in line)
        self.assertIn("**allowed** ✗", row)
        self.assertIn("Read", row)

    def test_a_condition_key_that_does_not_apply_fails_its_case(self):
        with open(CASES) as fh:
            doc = json.load(fh)
        doc["cases"] = [{
            "role": "control-plane", "expect": "denied", "why": "a misspelt key", "action": "route53:ChangeResourceRecordSets",
            "resource": "arn:aws:route53:::hostedzone/Z0123",
            "context": {"route53:ChangeResourceRecordSetsActionTypes": ["UPSERT"], "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["x.example.com"],
                        "route53:ChangeResourceRecordSetsRecordTypes": ["A"]},
        }]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(doc, fh)
        try:
            table, bad = denial_table.run(fh.name, render.EXAMPLE_VARS)
        finally:
            os.unlink(fh.name)
        self.assertEqual(bad, 1, table)
        self.assertIn("not applicable: route53:ChangeResourceRecordSetsActionTypes", table)


def ssm_line(caller, op, body):
    return {"caller": caller, "service": "ssm", "operation": op, "method": "POST", "path": "/", "query": "",
            "headers": {"x-amz-target": f"AmazonSSM.{op}"}, "body": json.dumps(body)}


@unittest.skipUnless(RUN, "the evaluator is not installed (scripts/setup-iam-eval): capture check not run")
class CaptureCheck(unittest.TestCase):
    """A capture in the recording proxy's format, checked against the rendered examples."""

    def run_check(self, lines, *extra):
        with tempfile.TemporaryDirectory() as d:
            cap = os.path.join(d, "capture.jsonl")
            with open(cap, "w") as fh:
                fh.write("\n".join(json.dumps(x) for x in lines) + "\n")
            tags = os.path.join(d, "tags.json")
            with open(tags, "w") as fh:
                json.dump({"alpha-node": {"Cluster": "alpha", "Role": "node"}}, fh)
            ex = os.path.join(render.EXAMPLES_DIR, "{}-policy.json")
            out = io.StringIO()
            with redirect_stdout(out):
                code = capture_check.main([cap, "--caller", "AKIANODE=" + ex.format("node"), "--caller", "AKIACP=" + ex.format("control-plane"), "--group-tags", tags, *extra])
            return code, out.getvalue()

    NODE_JOIN = [
        ssm_line("AKIANODE", "GetParameters", {"Names": ["/k3s-asg/clusters/alpha/config", "/k3s-asg/clusters/alpha/agent-token", "/k3s-asg/clusters/alpha/kubeconfig/drain"], "WithDecryption": True}),
        {"caller": "AKIANODE", "service": "route53", "operation": "ListResourceRecordSets", "method": "GET", "path": "/2013-04-01/hostedzone/Z0123/rrset",
         "query": "name=api.alpha.example.com.&type=A&maxitems=300", "headers": {}, "body": ""},
        {"caller": "AKIANODE", "service": "elasticloadbalancing", "operation": "RegisterTargets", "method": "POST", "path": "/", "query": "", "headers": {},
         "body": "Action=RegisterTargets&Version=2015-12-01&TargetGroupArn=arn%3Aaws%3Aelasticloadbalancing%3Aus-east-1%3A123456789012%3Atargetgroup%2Falpha-ingress%2F0123456789abcdef&Targets.member.1.Id=i-0123456789abcdef0"},
        {"caller": "AKIANODE", "service": "autoscaling", "operation": "CompleteLifecycleAction", "method": "POST", "path": "/", "query": "", "headers": {},
         "body": "Action=CompleteLifecycleAction&Version=2011-01-01&AutoScalingGroupName=alpha-node&LifecycleHookName=k3s-asg-leave&InstanceId=i-0123456789abcdef0&LifecycleActionResult=CONTINUE"},
        ssm_line("AKIACP", "PutParameter", {"Name": "/k3s-asg/clusters/alpha/agent-token", "Value": "K10x::node:y", "Type": "SecureString", "Overwrite": False}),
        ssm_line("AKIAOTHER", "GetParameters", {"Names": ["/k3s-asg/clusters/bravo/token"]}),
    ]

    def test_a_node_join_and_a_server_publishing_the_agent_token_are_allowed(self):
        code, out = self.run_check(self.NODE_JOIN, "--all")
        self.assertEqual(code, 0, out)
        self.assertIn("10 of 10 IAM requests allowed, 0 not; 0 capture lines not mapped; 1 lines of other callers skipped", out)
        self.assertIn("LifecycleOfThisClustersNodeGroupsOnly", out)

    def test_a_node_reading_the_server_token_fails_the_check(self):
        code, out = self.run_check(self.NODE_JOIN + [ssm_line("AKIANODE", "GetParameters", {"Names": ["/k3s-asg/clusters/alpha/token"], "WithDecryption": True})])
        self.assertEqual(code, 1, out)
        self.assertIn("`ssm:GetParameters` `arn:aws:ssm:us-east-1:123456789012:parameter/k3s-asg/clusters/alpha/token`", out)
        self.assertIn("ImplicitlyDenied", out)


if __name__ == "__main__":
    unittest.main()
