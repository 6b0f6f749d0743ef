"""Unit tests of requests.py: capture lines (the recording proxy's format) -> IAM requests.

Run: python3 -m unittest discover -s tests/tools/iam_eval -t tests/tools/iam_eval
"""
import json
import unittest

import requests as wire

ACCOUNT, REGION = "123456789012", "us-east-1"
P = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter"
TG = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/alpha-ingress/0123456789abcdef"
LISTENER = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener/app/shared/0123456789abcdef/fedcba9876543210"
RULE = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener-rule/app/shared/0123456789abcdef/fedcba9876543210/1111111111111111"


def ssm(op, body, caller="AKIANODE"):
    return {
        "caller": caller,
        "service": "ssm",
        "operation": op,
        "method": "POST",
        "path": "/",
        "query": "",
        "headers": {"x-amz-target": f"AmazonSSM.{op}", "content-type": "application/x-amz-json-1.1"},
        "body": json.dumps(body),
    }


def query(service, op, body, caller="AKIANODE"):
    return {
        "caller": caller,
        "service": service,
        "operation": op,
        "method": "POST",
        "path": "/",
        "query": "",
        "headers": {"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
        "body": body,
    }


def route53(method, path, op, body="", query_string="", caller="AKIACP"):
    return {"caller": caller, "service": "route53", "operation": op, "method": method, "path": path, "query": query_string, "headers": {}, "body": body}


CHANGE_BATCH = """<?xml version="1.0" encoding="UTF-8"?>
<ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <ChangeBatch>
    <Comment>k3s-asg</Comment>
    <Changes>
      <Change>
        <Action>UPSERT</Action>
        <ResourceRecordSet>
          <Name>API.Alpha.Example.com.</Name>
          <Type>A</Type>
          <SetIdentifier>i-0123456789abcdef0</SetIdentifier>
          <MultiValueAnswer>true</MultiValueAnswer>
          <TTL>30</TTL>
          <ResourceRecords><ResourceRecord><Value>127.0.0.10</Value></ResourceRecord></ResourceRecords>
        </ResourceRecordSet>
      </Change>
      <Change>
        <Action>DELETE</Action>
        <ResourceRecordSet>
          <Name>api.alpha.example.com.</Name>
          <Type>A</Type>
          <SetIdentifier>i-0000000000000000a</SetIdentifier>
          <MultiValueAnswer>true</MultiValueAnswer>
          <TTL>30</TTL>
          <ResourceRecords><ResourceRecord><Value>127.0.0.11</Value></ResourceRecord></ResourceRecords>
        </ResourceRecordSet>
      </Change>
      <Change>
        <Action>UPSERT</Action>
        <ResourceRecordSet>
          <Name>_k3s-asg.*.us-east-1.example.com</Name>
          <Type>TXT</Type>
          <TTL>300</TTL>
          <ResourceRecords><ResourceRecord><Value>"heritage=k3s-asg"</Value></ResourceRecord></ResourceRecords>
        </ResourceRecordSet>
      </Change>
    </Changes>
  </ChangeBatch>
</ChangeResourceRecordSetsRequest>
"""


class Ssm(unittest.TestCase):
    def test_get_parameters_is_one_request_per_name_and_decrypts_secure_strings_through_kms(self):
        line = ssm("GetParameters", {"Names": ["/k3s-asg/clusters/alpha/config", "/k3s-asg/clusters/alpha/agent-token", "/k3s-asg/clusters/alpha/kubeconfig/drain"], "WithDecryption": True})
        got = wire.iam_requests(line)
        ssm_reqs = [r for r in got if r["action"] == "ssm:GetParameters"]
        self.assertEqual([r["resource"] for r in ssm_reqs], [f"{P}/k3s-asg/clusters/alpha/config", f"{P}/k3s-asg/clusters/alpha/agent-token", f"{P}/k3s-asg/clusters/alpha/kubeconfig/drain"])
        kms = [r for r in got if r["action"] == "kms:Decrypt"]
        # The config is a String: no KMS call for it.
        self.assertEqual([r["context"]["kms:EncryptionContext:PARAMETER_ARN"] for r in kms], [f"{P}/k3s-asg/clusters/alpha/agent-token", f"{P}/k3s-asg/clusters/alpha/kubeconfig/drain"])
        for r in kms:
            self.assertEqual(r["context"]["kms:ViaService"], "ssm.us-east-1.amazonaws.com")
            self.assertEqual(r["resource"], f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{wire.SSM_KEY_ID}")
            self.assertIn("derived", r)
        self.assertTrue(all(r["caller"] == "AKIANODE" and r["operation"] == "ssm:GetParameters" for r in got))

    def test_without_decryption_no_kms(self):
        got = wire.iam_requests(ssm("GetParameters", {"Names": ["/k3s-asg/clusters/alpha/token"]}))
        self.assertEqual([r["action"] for r in got], ["ssm:GetParameters"])

    def test_a_name_without_leading_slash_and_a_version_selector(self):
        got = wire.iam_requests(ssm("GetParameter", {"Name": "plain:3"}))
        self.assertEqual(got[0]["resource"], f"{P}/plain")

    def test_get_parameters_by_path_names_the_path_and_recursion(self):
        got = wire.iam_requests(ssm("GetParametersByPath", {"Path": "/k3s-asg/clusters", "Recursive": True, "WithDecryption": False}))
        self.assertEqual(got, [{"action": "ssm:GetParametersByPath", "resource": f"{P}/k3s-asg/clusters", "context": {"ssm:Recursive": "true"}, "caller": "AKIANODE", "operation": "ssm:GetParametersByPath"}])

    def test_put_secure_string_is_a_put_and_a_kms_encrypt(self):
        got = wire.iam_requests(ssm("PutParameter", {"Name": "/k3s-asg/clusters/alpha/token", "Value": "K10secret", "Type": "SecureString", "Overwrite": False}, caller="AKIACP"))
        self.assertEqual([r["action"] for r in got], ["ssm:PutParameter", "kms:Encrypt"])
        self.assertEqual(got[0]["context"], {"ssm:Overwrite": "false"})
        self.assertEqual(got[1]["context"]["kms:EncryptionContext:PARAMETER_ARN"], f"{P}/k3s-asg/clusters/alpha/token")

    def test_put_string_has_no_kms(self):
        got = wire.iam_requests(ssm("PutParameter", {"Name": "/k3s-asg/clusters/alpha/election/1", "Value": "{}", "Type": "String", "Overwrite": True}, caller="AKIACP"))
        self.assertEqual([(r["action"], r["context"]) for r in got], [("ssm:PutParameter", {"ssm:Overwrite": "true"})])

    def test_the_target_header_decides_and_must_agree(self):
        line = ssm("GetParameters", {"Names": ["/x"]})
        line["operation"] = "GetParameter"
        with self.assertRaises(wire.Unmapped):
            wire.iam_requests(line)


class QueryProtocol(unittest.TestCase):
    def test_register_targets_names_the_target_group(self):
        body = "Action=RegisterTargets&Version=2015-12-01&TargetGroupArn=" + wire.urllib.parse.quote(TG, safe="") + "&Targets.member.1.Id=i-0123456789abcdef0&Targets.member.1.Port=80"
        got = wire.iam_requests(query("elasticloadbalancing", "RegisterTargets", body))
        self.assertEqual([(r["action"], r["resource"], r["context"]) for r in got], [("elasticloadbalancing:RegisterTargets", TG, {})])

    def test_target_group_tags_become_resource_tag_keys(self):
        body = "Action=DeregisterTargets&TargetGroupArn=" + wire.urllib.parse.quote(TG, safe="")
        s = wire.Settings(resource_tags={TG: {"Cluster": "alpha"}})
        got = wire.iam_requests(query("elasticloadbalancing", "DeregisterTargets", body), s)
        self.assertEqual(got[0]["context"], {"aws:ResourceTag/Cluster": "alpha", "elasticloadbalancing:ResourceTag/Cluster": "alpha"})

    def test_describe_calls_are_on_every_resource(self):
        got = wire.iam_requests(query("elasticloadbalancing", "DescribeTargetHealth", "Action=DescribeTargetHealth&TargetGroupArn=" + TG))
        self.assertEqual(got[0]["resource"], "*")
        got = wire.iam_requests(query("ec2", "DescribeInstances", "Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0"))
        self.assertEqual((got[0]["action"], got[0]["resource"], got[0]["context"]), ("ec2:DescribeInstances", "*", {"ec2:Region": REGION}))

    def test_create_rule_with_tags_also_needs_add_tags_on_create(self):
        body = "&".join([
            "Action=CreateRule",
            "ListenerArn=" + wire.urllib.parse.quote(LISTENER, safe=""),
            "Priority=7",
            "Conditions.member.1.Field=host-header",
            "Conditions.member.1.HostHeaderConfig.Values.member.1=blog.example.com",
            "Actions.member.1.Type=forward",
            "Tags.member.1.Key=k3s-asg%3Aowner",
            "Tags.member.1.Value=k3s-asg",
        ])
        got = wire.iam_requests(query("elasticloadbalancing", "CreateRule", body, caller="AKIACOORD"))
        self.assertEqual(got[0]["action"], "elasticloadbalancing:CreateRule")
        self.assertEqual(got[0]["resource"], LISTENER)
        self.assertEqual(got[0]["context"], {"aws:RequestTag/k3s-asg:owner": "k3s-asg", "aws:TagKeys": ["k3s-asg:owner"]})
        self.assertEqual(got[1]["action"], "elasticloadbalancing:AddTags")
        self.assertTrue(got[1]["resource"].startswith(LISTENER.replace(":listener/", ":listener-rule/") + "/"))
        self.assertEqual(got[1]["context"]["elasticloadbalancing:CreateAction"], "CreateRule")

    def test_set_rule_priorities_is_one_request_per_rule_in_order(self):
        other = RULE[:-1] + "2"
        body = f"Action=SetRulePriorities&RulePriorities.member.2.RuleArn={other}&RulePriorities.member.2.Priority=2&RulePriorities.member.1.RuleArn={RULE}&RulePriorities.member.1.Priority=1"
        got = wire.iam_requests(query("elasticloadbalancing", "SetRulePriorities", body, caller="AKIACOORD"), wire.Settings(resource_tags={RULE: {"k3s-asg:owner": "k3s-asg"}}))
        self.assertEqual([r["resource"] for r in got], [RULE, other])
        self.assertEqual(got[0]["context"]["aws:ResourceTag/k3s-asg:owner"], "k3s-asg")
        self.assertEqual(got[1]["context"], {})

    def test_lifecycle_calls_name_the_group_and_carry_its_tags(self):
        body = "Action=CompleteLifecycleAction&Version=2011-01-01&AutoScalingGroupName=alpha-node&LifecycleHookName=k3s-asg-leave&InstanceId=i-0123456789abcdef0&LifecycleActionResult=CONTINUE"
        s = wire.Settings(group_tags={"alpha-node": {"Cluster": "alpha", "Role": "node"}})
        got = wire.iam_requests(query("autoscaling", "CompleteLifecycleAction", body), s)
        self.assertEqual(got[0]["resource"], f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:{wire.GROUP_UUID}:autoScalingGroupName/alpha-node")
        self.assertEqual(got[0]["context"], {"aws:ResourceTag/Cluster": "alpha", "autoscaling:ResourceTag/Cluster": "alpha", "aws:ResourceTag/Role": "node", "autoscaling:ResourceTag/Role": "node"})
        # A group whose tags were not given is evaluated as untagged, and says so.
        got = wire.iam_requests(query("autoscaling", "RecordLifecycleActionHeartbeat", body.replace("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat")))
        self.assertEqual(got[0]["context"], {})
        self.assertIn("no tags", got[0]["note"])

    def test_the_action_parameter_decides_and_must_agree(self):
        with self.assertRaises(wire.Unmapped):
            wire.iam_requests(query("ec2", "DescribeTags", "Action=DescribeInstances"))


class Route53(unittest.TestCase):
    def test_change_batch_keys_are_normalised_and_deduplicated(self):
        got = wire.iam_requests(route53("POST", "/2013-04-01/hostedzone/Z0123/rrset/", "ChangeResourceRecordSets", CHANGE_BATCH))
        self.assertEqual(got[0]["action"], "route53:ChangeResourceRecordSets")
        self.assertEqual(got[0]["resource"], "arn:aws:route53:::hostedzone/Z0123")
        self.assertEqual(got[0]["context"], {
            "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["api.alpha.example.com", "_k3s-asg.\\052.us-east-1.example.com"],
            "route53:ChangeResourceRecordSetsRecordTypes": ["A", "TXT"],
            "route53:ChangeResourceRecordSetsActions": ["UPSERT", "DELETE"],
        })

    def test_listing_and_reading_a_zone(self):
        got = wire.iam_requests(route53("GET", "/2013-04-01/hostedzone/Z0123/rrset", "ListResourceRecordSets", query_string="name=api.alpha.example.com.&type=A&maxitems=300"))
        self.assertEqual((got[0]["action"], got[0]["resource"]), ("route53:ListResourceRecordSets", "arn:aws:route53:::hostedzone/Z0123"))
        got = wire.iam_requests(route53("GET", "/2013-04-01/hostedzone/Z0123", "GetHostedZone"))
        self.assertEqual((got[0]["action"], got[0]["resource"]), ("route53:GetHostedZone", "arn:aws:route53:::hostedzone/Z0123"))

    def test_a_zone_id_given_with_its_hostedzone_prefix(self):
        got = wire.iam_requests(route53("GET", "/2013-04-01/hostedzone/%2Fhostedzone%2FZ0123/rrset", "ListResourceRecordSets"))
        self.assertEqual(got[0]["resource"], "arn:aws:route53:::hostedzone/Z0123")

    def test_normalisation(self):
        self.assertEqual(wire.normalize_record_name("*.Example.COM."), "\\052.example.com")
        self.assertEqual(wire.normalize_record_name("\\052.example.com"), "\\052.example.com")
        self.assertEqual(wire.normalize_record_name("a_b-c.example.com"), "a_b-c.example.com")

    def test_a_path_that_disagrees_with_the_operation(self):
        with self.assertRaises(wire.Unmapped):
            wire.iam_requests(route53("GET", "/2013-04-01/hostedzone/Z0123/rrset", "ChangeResourceRecordSets"))


class S3(unittest.TestCase):
    def line(self, method, path, op, query_string="", body=""):
        return {"caller": "AKIACP", "service": "s3", "operation": op, "method": method, "path": path, "query": query_string, "headers": {}, "body": body}

    def test_listing_and_head_bucket_are_list_bucket(self):
        got = wire.iam_requests(self.line("GET", "/snaps", "ListObjectsV2", "list-type=2&prefix=clusters%2Falpha%2F"))
        self.assertEqual((got[0]["action"], got[0]["resource"], got[0]["context"]), ("s3:ListBucket", "arn:aws:s3:::snaps", {"s3:prefix": "clusters/alpha/"}))
        got = wire.iam_requests(self.line("HEAD", "/snaps", "HeadBucket"))
        self.assertEqual((got[0]["action"], got[0]["context"]), ("s3:ListBucket", {}))

    def test_objects(self):
        got = wire.iam_requests(self.line("PUT", "/snaps/clusters/alpha/etcd-snapshot-1", "PutObject"))
        self.assertEqual((got[0]["action"], got[0]["resource"]), ("s3:PutObject", "arn:aws:s3:::snaps/clusters/alpha/etcd-snapshot-1"))
        got = wire.iam_requests(self.line("DELETE", "/snaps/clusters/alpha/x", "AbortMultipartUpload", "uploadId=abc"))
        self.assertEqual(got[0]["action"], "s3:AbortMultipartUpload")
        got = wire.iam_requests(self.line("POST", "/snaps", "DeleteObjects", "delete=", "<Delete><Object><Key>clusters/alpha/a</Key></Object><Object><Key>clusters/alpha/b</Key></Object></Delete>"))
        self.assertEqual([r["resource"] for r in got], ["arn:aws:s3:::snaps/clusters/alpha/a", "arn:aws:s3:::snaps/clusters/alpha/b"])

    def test_operation_inferred_when_absent(self):
        line = self.line("GET", "/snaps/clusters/alpha/x", None)
        self.assertEqual(wire.iam_requests(line)[0]["action"], "s3:GetObject")


class Capture(unittest.TestCase):
    def test_a_capture_with_an_unmapped_line_and_a_caller_filter(self):
        lines = [
            json.dumps(ssm("GetParameters", {"Names": ["/k3s-asg/clusters/alpha/config"]})),
            "",
            json.dumps(query("ec2", "RunInstances", "Action=RunInstances", caller="AKIANODE")),
            json.dumps(ssm("GetParameters", {"Names": ["/k3s-asg/clusters/alpha/config"]}, caller="AKIAOTHER")),
        ]
        reqs, unmapped = wire.from_capture(lines, caller="AKIANODE")
        self.assertEqual([(r["line"], r["action"]) for r in reqs], [(1, "ssm:GetParameters")])
        self.assertEqual([n for n, _ in unmapped], [3])
        self.assertIn("ec2:RunInstances", unmapped[0][1])


if __name__ == "__main__":
    unittest.main()
