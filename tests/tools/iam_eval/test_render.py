"""Unit tests of render.py, and its parity with Terraform's templatefile where terraform is installed.

Run: python3 -m unittest discover -s tests/tools/iam_eval -t tests/tools/iam_eval
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import render

VARS = render.load_vars()


def policy(name, **over):
    v = dict(VARS)
    v.update(over)
    return render.render_policy(os.path.join(render.IAM_DIR, name), v)


def resources(doc):
    out = []
    for st in doc["Statement"]:
        r = st.get("Resource", [])
        out += r if isinstance(r, list) else [r]
    return out


def actions(doc):
    out = []
    for st in doc["Statement"]:
        a = st["Action"]
        out += a if isinstance(a, list) else [a]
    return out


class Templates(unittest.TestCase):
    def test_every_template_renders_to_a_policy(self):
        names = render.templates()
        self.assertEqual(names, ["control-plane-policy.json.tftpl", "coordinator-policy.json.tftpl", "node-policy.json.tftpl"])
        for name in names:
            doc = policy(name)
            self.assertEqual(doc["Version"], "2012-10-17")
            sids = [st["Sid"] for st in doc["Statement"]]
            self.assertEqual(len(sids), len(set(sids)), f"{name}: Sids are unique")
            self.assertTrue(all(s.isalnum() for s in sids), f"{name}: Sids are alphanumeric")

    def test_the_rendered_examples_are_current(self):
        self.assertEqual(render.examples(check=True), 0, "run tests/tools/iam_eval/render.py --examples")

    def test_the_node_policy_names_no_server_secret_and_writes_nothing(self):
        doc = policy("node-policy.json.tftpl")
        text = json.dumps(doc)
        self.assertNotIn("/token\"", text)
        self.assertNotIn("kubeconfig/admin", text)
        self.assertNotIn("kubeconfig/*", text)
        for forbidden in ("ssm:PutParameter", "ssm:GetParametersByPath", "route53:ChangeResourceRecordSets", "kms:Encrypt", "s3:"):
            self.assertFalse(any(a.startswith(forbidden) for a in actions(doc)), forbidden)

    def test_partition_region_account_and_prefix_reach_every_arn(self):
        tg = ["arn:aws-us-gov:elasticloadbalancing:us-gov-west-1:210987654321:targetgroup/alpha-ingress/0123456789abcdef"]
        doc = policy("control-plane-policy.json.tftpl", partition="aws-us-gov", region="us-gov-west-1", account_id="210987654321", prefix="/team/k3s", target_group_arns=tg)
        for arn in resources(doc):
            if arn == "*":
                continue
            self.assertTrue(arn.startswith("arn:aws-us-gov:"), arn)
            if ":ssm:" in arn:
                self.assertTrue(arn.startswith("arn:aws-us-gov:ssm:us-gov-west-1:210987654321:parameter/team/k3s/clusters/alpha/"), arn)
        via = [st["Condition"]["StringEquals"]["kms:ViaService"] for st in doc["Statement"] if st["Sid"].endswith("ThroughSsmOnly")]
        self.assertEqual(via, ["ssm.us-gov-west-1.amazonaws.com"])


class Syntax(unittest.TestCase):
    def test_subset(self):
        self.assertEqual(render.render_text('{"a": "${x}", "b": ${jsonencode(l)}, "c": "$${x}"}', {"x": "1", "l": ["<&>"]}),
                         '{"a": "1", "b": ["\\u003c\\u0026\\u003e"], "c": "${x}"}')
        for bad in ('{"a": "${upper(x)}"}', '{%{ for i in l }${i}%{ endfor }}', '{"a": "${x'):
            with self.assertRaises(render.TemplateError, msg=bad):
                render.render_text(bad, {"x": "1", "l": ["a"]})
        with self.assertRaisesRegex(render.TemplateError, "does not contain key 'y'"):
            render.render_text('{"a": "${y}"}', {"x": "1"})
        with self.assertRaisesRegex(render.TemplateError, "jsonencode"):
            render.render_text('{"a": "${l}"}', {"l": ["a"]})
        with self.assertRaisesRegex(render.TemplateError, "not JSON"):
            render.render_text('{"a": ${x}}', {"x": "not json"})

    def test_variables_checked_as_terraform_checks_them(self):
        for over in ({"prefix": "k3s-asg"}, {"prefix": "/k3s-asg/"}, {"api_hostname": "api.alpha.example.com."}, {"api_hostname": "API.alpha.example.com"}, {"target_group_arns": []}):
            with self.assertRaises(render.TemplateError, msg=str(over)):
                policy("node-policy.json.tftpl", **over)


def terraform():
    return shutil.which("terraform")


@unittest.skipUnless(terraform(), "terraform is not on PATH: render.py's parity with templatefile not checked")
class TerraformParity(unittest.TestCase):
    def test_render_matches_templatefile(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "vars.json"), "w") as fh:
                json.dump(VARS, fh)
            with open(os.path.join(d, "main.tf"), "w") as fh:
                fh.write('locals { v = jsondecode(file("vars.json")) }\n')
            for name in render.templates() + ["control-plane-snapshots-policy.json", "cluster-autoscaler-policy.json"]:
                path = os.path.join(render.IAM_DIR, name)
                out = subprocess.run([terraform(), "console"], input=f'templatefile("{path}", local.v)\n', capture_output=True, text=True, cwd=d,
                                     env={**os.environ, "TF_IN_AUTOMATION": "1"})
                self.assertEqual(out.returncode, 0, out.stderr)
                lines = out.stdout.splitlines()
                self.assertEqual((lines[0], lines[-1]), ("<<EOT", "EOT"), out.stdout[:200])
                # The heredoc holds the string as it is: "A\n" prints as <<EOT, A, (empty line), EOT.
                theirs = "\n".join(lines[1:-1])
                ours = render.render_file(path, VARS)
                self.assertEqual(ours, theirs, name)


if __name__ == "__main__":
    unittest.main()
