"""S3 side of the test bed's k3s stub: etcd snapshots as objects in moto's S3.

A snapshot object is the etcd snapshot itself (`etcdctl snapshot save` through this server's
member), and like k3s's it carries object metadata naming the token's hash. It restores only
with the cluster's original token: the reset finds the cluster's bootstrap data in the restored
etcd under that token (k3s_etcd.py `reset`).

usage: k3s_s3.py save NAME | restore NAME | prune PREFIX KEEP
Bucket, folder and region come from the k3s config (etcd-s3-*), as k3s reads them;
the endpoint and credentials from the environment (k3s's own AWS_* variables, else the
instance's key as the instance role would give it: K3S_STUB_*).
"""
import hashlib
import os
import re
import subprocess
import sys
import tempfile

import boto3

root = os.environ["K3S_ASG_ROOT"]
here = os.path.dirname(os.path.abspath(__file__))
config = open(os.path.join(root, "etc/rancher/k3s/config.yaml")).read()


def key(name):
    m = re.search(r'^%s: "?([^"\n]*)"?$' % re.escape(name), config, re.M)
    return m.group(1) if m else None


def args_or_config(flag, cfg_key):
    for i, a in enumerate(sys.argv):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return key(cfg_key)


bucket = args_or_config("--s3-bucket", "etcd-s3-bucket")
folder = args_or_config("--s3-folder", "etcd-s3-folder") or ""
region = args_or_config("--s3-region", "etcd-s3-region") or "us-east-1"
if not bucket:
    sys.exit("k3s: etcd-s3 is not configured (no etcd-s3-bucket)")
# k3s takes S3 credentials from its flags or environment, else the instance role (IMDS): the
# agent runs k3s without its own credentials, so the bed hands k3s the instance's key and moto's
# address under its own names (K3S_STUB_*), as the instance role and the real endpoint would.
s3 = boto3.client(
    "s3",
    region_name=region,
    endpoint_url=os.environ.get("K3S_STUB_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL"),
    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("K3S_STUB_AWS_ACCESS_KEY_ID"),
    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or os.environ.get("K3S_STUB_AWS_SECRET_ACCESS_KEY"),
)
db = os.path.join(root, "var/lib/rancher/k3s/server/db")
token = key("token") or ""
password = token.split("::server:")[-1]
# k3s pkg/etcd/s3: the first 12 hex digits of the sha256 of the token's password.
pw_hash = hashlib.sha256(password.encode()).hexdigest()[:12]
prefix = folder + "/" if folder else ""

cmd, arg = sys.argv[1], sys.argv[2]
if cmd == "save":
    # The etcd data itself (etcdctl snapshot save through this server's member), as k3s saves it.
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, os.path.join(here, "k3s_etcd.py"), "save", os.path.join(tmp, "db")],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"failed to save snapshot: {out.stderr.strip()}")
        body = open(os.path.join(tmp, "db"), "rb").read()
    s3.put_object(Bucket=bucket, Key=prefix + arg, Body=body, Metadata={"k3s-token-hash": pw_hash, "k3s-node-name": key("node-name") or ""})
    print(f"Snapshot {arg} saved to s3://{bucket}/{prefix}{arg}")
elif cmd == "restore":
    try:
        obj = s3.get_object(Bucket=bucket, Key=prefix + arg)
    except s3.exceptions.NoSuchKey:
        sys.exit(f"failed to download snapshot {arg} from S3: NoSuchKey")
    os.makedirs(db, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "db"), "wb") as f:
            f.write(obj["Body"].read())
        out = subprocess.run([sys.executable, os.path.join(here, "k3s_etcd.py"), "reset", os.path.join(tmp, "db")],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"failed to restore snapshot {arg}: {out.stderr.strip()}")
    with open(os.path.join(db, "restored-from"), "w") as f:
        f.write(arg)
elif cmd == "prune":
    keep = int(sys.argv[3])
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + arg).get("Contents", [])
    for obj in sorted(listed, key=lambda o: o["LastModified"])[:-keep] if keep > 0 else []:
        s3.delete_object(Bucket=bucket, Key=obj["Key"])
else:
    sys.exit(f"unknown command {cmd}")
