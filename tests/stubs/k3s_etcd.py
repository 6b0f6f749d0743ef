"""The test bed's k3s datastore: each server's embedded etcd is a real etcd member.

Debian's etcd-server (3.4) runs one member per server host, as k3s's embedded etcd does, with
k3s's paths and rules (k3s-io/k3s, cited per rule):

- data in `server/db/etcd`, certificates in `server/tls/etcd` (`server-ca.crt`, `client.crt`,
  `client.key`: pkg/daemons/control/deps/deps.go); clients on `https://IP:2379` with client
  certificates required; peers on `IP:2380` (plain HTTP here: nothing of the agent's speaks
  on it).
- member names are the node name and a random suffix (pkg/etcd/etcd.go `setName`).
- an existing datastore wins over `server:` (pkg/etcd/etcd.go `Start`: IsInitialized → start
  the member it has); `cluster-init` with none starts a new etcd cluster with a new etcd CA;
  `server:` with none adds this member as a learner through the named server (a cluster
  without a leader refuses: the start blocks, as k3s's `Type=notify` unit does) and k3s's
  learner manager promotes it later (`manageLearners`; delay: K3S_STUB_PROMOTE_AFTER, s).
- a tombstone (`db/etcd/tombstone`, written when this member was removed) moves the datastore
  aside at the next start (pkg/etcd/etcd.go `Register`), which then starts as if fresh: with
  `cluster-init` and no `server:` that is a new cluster from the certificates on disk.
- `--cluster-reset` is etcd's `--force-new-cluster` on the data kept; with a restore path, the
  snapshot's etcd data restored with `etcdctl snapshot restore` (pkg/etcd/etcd.go `Reset`).
- Node objects live in etcd (`/registry/minions/NAME`): kubectl needs a quorum, and deleting a
  server's Node removes its etcd member (k3s's etcd member controller, pkg/etcd/etcd.go
  `sync`/`removePeer`); the removed member's etcd stops, k3s writes the tombstone and exits,
  and systemd (`Restart=always`, `RestartSec=5s`; K3S_STUB_RESTART_SEC) starts it again.

usage: k3s_etcd.py start | stop | members | health | nodes [--control-plane] | node-ready NAME |
       delete-node NAME | register | reset [SNAPSHOT_FILE] | save FILE
Any command that names a server takes it from `--kubeconfig PATH` (the API address in it)
or uses this host's own member.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import secrets

root = os.environ["K3S_ASG_ROOT"]
stub = os.path.join(root, "run/k3s-stub")
server_dir = os.path.join(root, "var/lib/rancher/k3s/server")
db = os.path.join(server_dir, "db")
data = os.path.join(db, "etcd")
cfg_path = os.path.join(root, "etc/rancher/k3s/config.yaml")
hosts = os.environ.get("K3S_STUB_HOSTS", "")
os.makedirs(stub, exist_ok=True)


def log(msg):
    with open(os.path.join(stub, "etcd.log"), "a") as f:
        f.write(f"{time.time():.3f} {msg}\n")


def config():
    out = {}
    try:
        text = open(cfg_path).read()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        m = re.match(r'^([a-z0-9-]+): "?([^"]*)"?$', line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def host_root(ip):
    return os.path.join(hosts, ip) if hosts else None


def tls_dir(r):
    return os.path.join(r, "var/lib/rancher/k3s/server/tls/etcd")


def ctl(r, ip, *args, timeout=3, input_text=None):
    """etcdctl against the member at `ip` with host `r`'s client certificate."""
    t = tls_dir(r)
    cmd = ["etcdctl", f"--endpoints=https://{ip}:2379", f"--cacert={t}/server-ca.crt", f"--cert={t}/client.crt",
           f"--key={t}/client.key", f"--dial-timeout={timeout}s", f"--command-timeout={timeout}s", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5, input=input_text)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def new_ca(t):
    """A new etcd CA and the client certificate k3s's own components use."""
    os.makedirs(t, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            f"{t}/server-ca.key", "-out", f"{t}/server-ca.crt", "-days", "3650", "-subj",
            f"/CN=etcd-server-ca@{int(time.time())}-{secrets.token_hex(4)}")
    sign(t, "client", "etcd-client", "extendedKeyUsage=clientAuth\n")


def sign(t, name, cn, ext):
    with open(f"{t}/{name}.ext", "w") as f:
        f.write(ext)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{t}/{name}.key",
            "-out", f"{t}/{name}.csr", "-subj", f"/CN={cn}")
    openssl("x509", "-req", "-in", f"{t}/{name}.csr", "-CA", f"{t}/server-ca.crt", "-CAkey", f"{t}/server-ca.key",
            "-CAcreateserial", "-out", f"{t}/{name}.crt", "-days", "3650", "-extfile", f"{t}/{name}.ext")
    os.chmod(f"{t}/{name}.key", 0o600)


def server_cert(t, ip):
    sign(t, "server-client", "etcd-server", f"subjectAltName=IP:{ip},IP:127.0.0.1\n"
         "extendedKeyUsage=serverAuth,clientAuth\n")


# k3s's own certificates (pkg/daemons/control/deps/deps.go): the server CA that /cacerts serves
# and whose hash a secure token carries, and the supervisor's serving certificate it signs.
ktls = os.path.join(server_dir, "tls")


def password_of(token):
    """The token's password: what follows `::server:` in a secure token, or the whole token."""
    return token.split("::server:")[-1] if token else ""


def bootstrap_key(token):
    """Where k3s keeps the cluster's bootstrap data in etcd, encrypted with the token's password:
    `/bootstrap/` + the first 12 hex digits of its sha256 (pkg/cluster/storage.go
    `bootstrapKeyName`). Only the cluster's own token finds (and decrypts) it."""
    return "/bootstrap/" + hashlib.sha256(password_of(token).encode()).hexdigest()[:12]


def fatal(why):
    """k3s exits with a fatal error: the unit fails (systemd would restart it, and it would fail
    the same way)."""
    log(f"k3s fatal: {why}")
    open(os.path.join(stub, "failed-k3s"), "w").close()
    for f in ("activating-k3s", "starter.pid"):
        try:
            os.remove(os.path.join(stub, f))
        except FileNotFoundError:
            pass
    sys.stderr.write(f"level=fatal msg=\"{why}\"\n")
    sys.exit(1)


passwd_path = os.path.join(server_dir, "cred/passwd")


def passwd_rows(text):
    """k3s's `cred/passwd` (its apiserver's basic-auth file): `password,user,user,group` rows."""
    rows = {}
    for line in (text or "").splitlines():
        parts = line.split(",")
        if len(parts) >= 2:
            rows[parts[1]] = parts[0]
    return rows


def gen_users(cfg):
    """k3s's `genUsers` at every start (pkg/daemons/control/deps/deps.go): the `server` user's
    password is the token's, the `node` user's the agent token's or, without one, the token's
    (`getNodePass`); the file is rewritten (on this host only) when either differs."""
    server_pw = password_of(cfg.get("token", ""))
    agent = cfg.get("agent-token", "")
    node_pw = agent.split("::node:")[-1] if agent else server_pw
    want = f"{node_pw},node,node,k3s:agent\n{server_pw},server,server,k3s:server\n"
    if _read(passwd_path) != want:
        write_atomic(passwd_path, want)


def reconcile(files, why):
    """k3s's `ReconcileBootstrapData` (pkg/cluster/bootstrap.go): for each bootstrap file, data on
    disk that differs from the datastore's and is newer by the allowed skew (3 s) is refused
    ("newer than datastore"); otherwise the datastore's is written to disk with its time.
    `files`: {path: (content, mtime)}."""
    newer = []
    for path, (content, mtime) in files.items():
        if os.path.exists(path) and _read(path) != content and os.path.getmtime(path) - mtime >= 3:
            newer.append(path)
    if newer:
        fatal(", ".join(newer) + " newer than datastore and could cause a cluster outage. "
              "Remove the file(s) from disk and restart to be recreated from datastore.")
    for path, (content, mtime) in files.items():
        if _read(path) != content:
            log(f"{why}: updating {os.path.relpath(path, server_dir)} on disk from the datastore")
            write_atomic(path, content, mtime)


def write_atomic(path, content, mtime=None):
    """Writes a file whole (a reader never sees it half-written), with `mtime` if given."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(content)
    os.chmod(tmp, 0o600)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, path)


def bootstrap_files(boot):
    """The bootstrap data (as saved in etcd, or served by a server) as {path: (content, mtime)}."""
    out = {}
    for name, entry in boot.items():
        path = passwd_path if name == "passwd" else os.path.join(ktls, name)
        out[path] = (entry["content"], entry["mtime"]) if isinstance(entry, dict) else (entry, 0)
    return out


def disk_bootstrap(r):
    """A server's bootstrap files from its disk, with their times (what it serves a joiner)."""
    out = {}
    for name, path in (("server-ca.crt", "tls/server-ca.crt"), ("server-ca.key", "tls/server-ca.key"), ("passwd", "cred/passwd")):
        full = os.path.join(r, "var/lib/rancher/k3s/server", path)
        if os.path.exists(full):
            out[name] = {"content": _read(full), "mtime": os.path.getmtime(full)}
    return out


# The kubelet's own label rule (kubernetes/kubernetes cmd/kubelet/app/options/options.go
# `ValidateKubeletFlags`, pkg/kubelet/apis/well_known_labels.go): a label in the kubernetes.io or
# k8s.io namespaces (or a subdomain) is refused unless a kubelet may set it on its own Node.
KUBELET_LABELS = {
    "beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type", "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch", "kubernetes.io/hostname", "kubernetes.io/os", "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
}
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def node_labels():
    """The `node-label` entries of this host's config.yaml (a YAML list or one string)."""
    out, inside = [], False
    for line in _read(cfg_path).splitlines():
        if line.startswith("node-label:"):
            rest = line[len("node-label:"):].strip()
            if rest:
                out.append(rest.strip('"'))
            inside = not rest
        elif inside and line.startswith("  - "):
            out.append(line[4:].strip().strip('"'))
        else:
            inside = False
    return out


def kubelet_refused():
    """The labels the kubelet refuses to start with."""
    refused = []
    for label in node_labels():
        key = label.split("=", 1)[0]
        if "/" not in key:
            continue
        ns = key.split("/", 1)[0]
        under = lambda d: ns == d or ns.endswith("." + d)
        if (under("kubernetes.io") or under("k8s.io")) and key not in KUBELET_LABELS \
                and not any(under(d) for d in KUBELET_LABEL_NAMESPACES):
            refused.append(key)
    return refused


def new_server_ca():
    """cluster-init with no certificates on disk: a new server CA (k3s's `server-ca`)."""
    os.makedirs(ktls, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            f"{ktls}/server-ca.key", "-out", f"{ktls}/server-ca.crt", "-days", "3650", "-subj",
            f"/CN=k3s-server-ca@{int(time.time())}-{secrets.token_hex(4)}")
    os.chmod(f"{ktls}/server-ca.key", 0o600)
    log("generated a new server CA")


def bootstrap_from(pr, peer, token):
    """A joining server's bootstrap (pkg/cluster/bootstrap.go): the token's CA hash must match the
    server's CA (`ParseAndValidateToken`), its password must be the server's (the bootstrap
    request answers 401 otherwise), and the CA comes from the cluster unless the copy on disk
    differs and is newer, which k3s refuses (`ReconcileBootstrapData`: "newer than datastore")."""
    peer_ca = open(f"{pr}/var/lib/rancher/k3s/server/tls/server-ca.crt", "rb").read()
    if token.startswith("K10"):
        want, got = token[3:].split("::")[0], hashlib.sha256(peer_ca).hexdigest()
        if want != got:
            fatal(f"failed to validate token: token CA hash does not match the Cluster CA certificate hash: {want} != {got}")
    peer_token = _read(f"{pr}/var/lib/rancher/k3s/server/token").strip()
    if password_of(peer_token) != password_of(token):
        fatal(f"failed to get bootstrap data: https://{peer}:6443/v1-k3s/server-bootstrap: 401 Unauthorized")
    os.makedirs(ktls, exist_ok=True)
    reconcile(bootstrap_files(disk_bootstrap(pr)), "joining")


def serve(cfg):
    """What k3s writes for its clients once its CA is settled: the supervisor's serving
    certificate (signed by the server CA; the test bed's supervisor double serves it), the
    secure token `K10<sha256 of the CA>::server:<password>` and the admin kubeconfig."""
    ip = cfg["node-ip"]
    ca = open(f"{ktls}/server-ca.crt", "rb").read()
    # Signed again only when the CA changed (a restore, another cluster's CA after a reset).
    signed_by = os.path.join(ktls, "serving-kube-apiserver.ca-sha256")
    if _read(signed_by) != hashlib.sha256(ca).hexdigest():
        sign(ktls, "serving-kube-apiserver", "kube-apiserver", f"subjectAltName=IP:{ip},IP:127.0.0.1,DNS:localhost\n"
             "extendedKeyUsage=serverAuth\n")
        write_atomic(signed_by, hashlib.sha256(ca).hexdigest())
    # Whole files only: a joining server reads this one's token (its bootstrap request).
    write_atomic(os.path.join(server_dir, "token"),
                 f"K10{hashlib.sha256(ca).hexdigest()}::server:{password_of(cfg.get('token', ''))}\n")
    sa = _read(os.path.join(stub, "sa-token")).strip()
    write_atomic(os.path.join(os.path.dirname(cfg_path), "k3s.yaml"),
                 KUBECONFIG.format(ca=base64.b64encode(ca).decode(),
                                   key=base64.b64encode(f"stub-admin-key-{sa}".encode()).decode()))


KUBECONFIG = """apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: c3R1Yi1hZG1pbi1jZXJ0LSQxMjM0NQ==
    client-key-data: {key}
"""


def pid_alive(path):
    try:
        pid = int(open(path).read())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def member_name():
    path = os.path.join(data, "name")
    if os.path.exists(path):
        return open(path).read().strip()
    return None


def spawn_etcd(ip, name, cluster=None, state=None, force_new=False):
    t = tls_dir(root)
    cmd = ["etcd", "--name", name, "--data-dir", data,
           "--listen-client-urls", f"https://{ip}:2379", "--advertise-client-urls", f"https://{ip}:2379",
           "--listen-peer-urls", f"http://{ip}:2380", "--initial-advertise-peer-urls", f"http://{ip}:2380",
           "--cert-file", f"{t}/server-client.crt", "--key-file", f"{t}/server-client.key",
           "--trusted-ca-file", f"{t}/server-ca.crt", "--client-cert-auth",
           "--heartbeat-interval", "100", "--election-timeout", "1000", "--logger", "zap",
           "--log-outputs", os.path.join(stub, "etcd-server.log")]
    if cluster:
        cmd += ["--initial-cluster", cluster, "--initial-cluster-state", state]
    if force_new:
        cmd += ["--force-new-cluster"]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    with open(os.path.join(stub, "etcd.pid"), "w") as f:
        f.write(str(p.pid))
    return p


def status(r, ip):
    """This member's status: (has a leader, is a learner), or None when it does not answer."""
    out = ctl(r, ip, "endpoint", "status", "-w", "json", timeout=2)
    if out.returncode != 0:
        return None
    try:
        st = json.loads(out.stdout)[0]["Status"]
    except (ValueError, IndexError, KeyError):
        return None
    return (bool(st.get("leader")) and not st.get("errors"), bool(st.get("isLearner")))


def stop_etcd(kill=signal.SIGTERM):
    pid = pid_alive(os.path.join(stub, "etcd.pid"))
    if not pid:
        return
    try:
        os.killpg(pid, kill)
    except OSError:
        pass
    for _ in range(100):
        if not pid_alive(os.path.join(stub, "etcd.pid")):
            break
        time.sleep(0.05)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def tombstoned():
    """k3s's tombstone: moves the datastore aside (db/etcd-old-TIMESTAMP) before a fresh start."""
    if os.path.exists(os.path.join(data, "tombstone")):
        aside = os.path.join(db, f"etcd-old-{int(time.time())}")
        os.rename(data, aside)
        log(f"tombstone found: moved {data} to {aside}")


def detach():
    """Forks; `True` in the child, which runs on in its own session with no tie to the caller's
    output (whose reader would otherwise wait for it)."""
    if os.fork():
        return False
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    return True


def start():
    """`systemctl start k3s` on a server: returns once the member is ready (a notify unit's
    READY); blocks (retrying, like k3s) while it cannot be."""
    with open(os.path.join(stub, "starter.pid"), "w") as f:
        f.write(str(os.getpid()))
    cfg = config()
    ip, node = cfg["node-ip"], cfg["node-name"]
    t = tls_dir(root)
    initialised = restarted = False
    tombstoned()
    peer = None
    m = re.match(r"https://([^:]+):", cfg.get("server", ""))
    if m:
        peer = m.group(1)
    if os.path.exists(os.path.join(data, "member")):
        name = member_name()
        restarted = True
        log(f"starting member {name} from the datastore it has")
        serve(cfg)
        spawn_etcd(ip, name)
    elif peer:
        # k3s fetches the cluster's certificates with the token (bootstrap data), then joins.
        pr = host_root(peer)
        if not pr or not os.path.exists(f"{tls_dir(pr)}/server-ca.crt"):
            block(f"no server answers at {peer}")
        bootstrap_from(pr, peer, cfg.get("token", ""))
        gen_users(cfg)
        serve(cfg)
        os.makedirs(t, exist_ok=True)
        for f in ("server-ca.crt", "server-ca.key", "client.crt", "client.key"):
            shutil.copy(f"{tls_dir(pr)}/{f}", f"{t}/{f}")
        server_cert(t, ip)
        name = f"{node}-{secrets.token_hex(4)}"
        while True:
            # An add that timed out on this side may have gone through: k3s finds its own peer
            # URL in the member list and starts as that member (pkg/etcd/etcd.go `join`).
            listed = members(root, [peer])
            if any(f"http://{ip}:2380" in m.get("peerURLs", []) for m in listed):
                added = {"members": listed}
                log(f"an earlier member add through {peer} went through")
                break
            out = ctl(root, peer, "member", "add", name, "--learner", f"--peer-urls=http://{ip}:2380", "-w", "json")
            if out.returncode == 0:
                added = json.loads(out.stdout)
                break
            log(f"member add through {peer} refused: {out.stderr.strip().splitlines()[-1:]}; retrying")
            time.sleep(0.5)
        cluster = []
        for mem in added["members"]:
            mname = mem.get("name") or name
            for u in mem["peerURLs"]:
                cluster.append(f"{mname}={u}")
        os.makedirs(data, exist_ok=True)
        spawn_etcd(ip, name, ",".join(cluster), "existing")
        with open(os.path.join(data, "name"), "w") as f:
            f.write(name)
        log(f"joined through {peer} as learner {name}")
        promote_later(peer, name)
    elif cfg.get("cluster-init") == "true":
        if not os.path.exists(f"{ktls}/server-ca.crt"):
            new_server_ca()
        gen_users(cfg)
        serve(cfg)
        if not os.path.exists(f"{t}/server-ca.crt"):
            new_ca(t)
        if not os.path.exists(f"{t}/server-client.crt"):
            server_cert(t, ip)
        name = f"{node}-{secrets.token_hex(4)}"
        os.makedirs(data, exist_ok=True)
        spawn_etcd(ip, name, f"{name}=http://{ip}:2380", "new")
        with open(os.path.join(data, "name"), "w") as f:
            f.write(name)
        log(f"initialised a new cluster as {name}")
        initialised = True
    else:
        block("no datastore, no cluster-init and no server to join")
    while True:
        st = status(root, ip)
        if st and st[0]:
            break
        if not pid_alive(os.path.join(stub, "etcd.pid")):
            block("etcd exited while starting")
        time.sleep(0.1)
    if initialised:
        # k3s saves the cluster's bootstrap data (its CA and cred/passwd among it) into etcd
        # under the token, once, when the cluster begins (`Save`, never overwritten after).
        gen_users(cfg)
        boot = disk_bootstrap(root)
        while ctl(root, ip, "put", bootstrap_key(cfg.get("token", "")), json.dumps(boot)).returncode != 0:
            time.sleep(0.2)
    elif restarted:
        # A restart reconciles its files with the datastore's bootstrap data, then genUsers.
        out = ctl(root, ip, "get", bootstrap_key(cfg.get("token", "")), "--print-value-only")
        if out.returncode != 0 or not out.stdout.strip():
            fatal("bootstrap data already found and encrypted with different token")
        reconcile(bootstrap_files(json.loads(out.stdout)), "restart")
        gen_users(cfg)
    else:
        gen_users(cfg)
    r, via = api_server([])
    register_node(r, via, node, "control-plane", member_name())
    open(os.path.join(stub, "active-k3s"), "w").close()
    for f in ("activating-k3s", "failed-k3s", "starter.pid"):
        try:
            os.remove(os.path.join(stub, f))
        except FileNotFoundError:
            pass


def block(why):
    log(f"start blocks: {why}")
    while True:
        time.sleep(1)


def promote_later(peer, name):
    """k3s's learner manager: promotes this learner once it has caught up (here: after a delay)."""
    after = float(os.environ.get("K3S_STUB_PROMOTE_AFTER", "0.5"))
    if not detach():
        return
    time.sleep(after)
    for _ in range(600):
        mems = members(root, [peer, config().get("node-ip")])
        mine = [m for m in mems if m.get("name") == name]
        if not mine or not pid_alive(os.path.join(stub, "etcd.pid")):
            os._exit(0)
        if not mine[0].get("isLearner"):
            os._exit(0)
        for voter in [m for m in mems if not m.get("isLearner")]:
            vip = re.match(r"https://([^:]+):", voter["clientURLs"][0]).group(1) if voter.get("clientURLs") else None
            if vip and ctl(root, vip, "member", "promote", format(int(mine[0]["ID"]), "x")).returncode == 0:
                log(f"promoted {name}")
                os._exit(0)
        time.sleep(0.5)
    os._exit(0)


def members(r, ips):
    """The member list as the first member of `ips` that answers sees it."""
    for ip in ips:
        if not ip:
            continue
        out = ctl(r, ip, "member", "list", "-w", "json", timeout=2)
        if out.returncode == 0:
            return json.loads(out.stdout).get("members", [])
    return []


def register_node(r, ip, node, role, member):
    """The kubelet's Node object, put through the server at `ip` (certificates of host `r`)."""
    value = json.dumps({"host": root, "role": role, "member": member or ""})
    for _ in range(600):
        if ctl(r, ip, "put", f"/registry/minions/{node}", value).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def api_server(args):
    """(host root, ip) of the API server a kubectl call talks to: the kubeconfig's address, a
    name in it reached through the server this host joined (the API record's role), or this
    host's own member."""
    cfg = config()
    if "--kubeconfig" in args:
        text = open(args[args.index("--kubeconfig") + 1]).read()
        m = re.search(r"server: https://([0-9.]+):", text)
        if m and m.group(1) != "127.0.0.1":
            return host_root(m.group(1)), m.group(1)
    # A host without a member (an agent), or whose member is a learner (which serves no
    # linearizable reads or writes), reaches etcd through the server it joined: k3s's API
    # server is Ready, and its Node registered, before its own member votes.
    own = os.path.exists(os.path.join(data, "member"))
    if not own or (status(root, cfg.get("node-ip")) or (False, False))[1]:
        m = re.match(r"https://([^:]+):", cfg.get("server", ""))
        joined = m.group(1) if m else None
        # The API name resolves to the cluster's live servers (the agent keeps its records
        # true): the server joined through while it runs, else another live one of the cluster.
        for ip in [joined] + live_servers(cfg):
            if ip and host_root(ip) and os.path.exists(os.path.join(host_root(ip), "run/k3s-stub/active-k3s")):
                return host_root(ip), ip
    return root, cfg.get("node-ip")


def live_servers(cfg):
    """Addresses of the hosts whose k3s server runs with this host's cluster CA (the hash in
    its token, `K10<sha256 of the CA>::…`)."""
    import hashlib
    want = re.match(r"K10([0-9a-f]{64})::", cfg.get("token", ""))
    if not want or not hosts or not os.path.isdir(hosts):
        return []
    out = []
    for ip in sorted(os.listdir(hosts)):
        r = host_root(ip)
        ca = os.path.join(r, "var/lib/rancher/k3s/server/tls/server-ca.crt")
        if os.path.exists(os.path.join(r, "run/k3s-stub/active-k3s")) and os.path.exists(ca):
            if hashlib.sha256(open(ca, "rb").read()).hexdigest() == want.group(1):
                out.append(ip)
    return out


def nodes(args):
    r, ip = api_server(args)
    out = ctl(r, ip, "get", "--prefix", "/registry/minions/")
    if out.returncode != 0:
        sys.stderr.write("Error from server: etcdserver: request timed out (no quorum)\n")
        sys.exit(1)
    lines = out.stdout.splitlines()
    result = []
    for k, v in zip(lines[0::2], lines[1::2]):
        name = k.rsplit("/", 1)[1]
        node = json.loads(v)
        if "--control-plane" in args and node["role"] != "control-plane":
            continue
        result.append((name, ready(node)))
    return result


def ready(node):
    unit = "k3s" if node["role"] == "control-plane" else "k3s-agent"
    host_stub = os.path.join(node["host"], "run/k3s-stub")
    return os.path.exists(os.path.join(host_stub, f"active-{unit}")) and not os.path.exists(os.path.join(host_stub, "not-ready"))


def delete_node(args, name):
    """`kubectl delete node/NAME --wait=false`: a server's Node carries k3s's etcd finalizer, so
    its etcd member is removed first (retried, as k3s's controller does: etcd refuses to remove
    a voter within its health interval of a membership change, "unhealthy cluster") and the
    Node object goes after; kubectl does not wait for either."""
    r, ip = api_server(args)
    out = ctl(r, ip, "get", f"/registry/minions/{name}", "-w", "json")
    if out.returncode != 0:
        sys.stderr.write("Error from server: etcdserver: request timed out (no quorum)\n")
        sys.exit(1)
    kvs = json.loads(out.stdout).get("kvs", [])
    if not kvs:
        return
    # The revision the compare-and-delete below checks: this Node object, not a later one.
    node, revision = json.loads(base64.b64decode(kvs[0]["value"])), kvs[0]["mod_revision"]
    if not node.get("member"):
        if ctl(r, ip, "del", f"/registry/minions/{name}").returncode != 0:
            sys.stderr.write("Error from server: etcdserver: request timed out (no quorum)\n")
            sys.exit(1)
        return
    # Every member's address, known now: the server this was asked of may stop meanwhile.
    known = [ip] + [client_ip(m) for m in members(r, [ip])]
    if not detach():
        return
    for _ in range(300):
        mems = members(r, known)
        mine = [m for m in mems if m.get("name") == node["member"]]
        voters = [client_ip(m) for m in mems if not m.get("isLearner") and m.get("name") != node["member"]]
        if not mine:
            for via in voters:
                # The Node object this deletion was for, not one the server registered since
                # (rejoined as a new member under the same name): a compare-and-delete.
                out = ctl(r, via, "txn", input_text=f'mod("/registry/minions/{name}") = "{revision}"\n\n'
                          f"del /registry/minions/{name}\n\n\n")
                if out.returncode == 0 and out.stdout.startswith("SUCCESS"):
                    log(f"deleted Node {name} after its etcd member {node['member']}")
                    os._exit(0)
                if out.returncode == 0:
                    log(f"Node {name} was registered again since; kept it")
                    os._exit(0)
        else:
            for via in voters + [ip]:
                out = ctl(r, via, "member", "remove", format(int(mine[0]["ID"]), "x"))
                if out.returncode == 0:
                    log(f"removed etcd member {node['member']} of deleted Node {name}")
                    break
                log(f"could not remove etcd member {node['member']} through {via}: {out.stderr.strip().splitlines()[-1:]}")
        time.sleep(0.5)
    os._exit(0)


def client_ip(member):
    urls = member.get("clientURLs") or []
    m = re.match(r"https://([^:]+):", urls[0]) if urls else None
    return m.group(1) if m else None


def watch():
    """Runs beside a server's etcd: the unit's life. When the test bed takes k3s down
    (active-k3s removed: the host died) etcd dies with it; when etcd stops because its member
    was removed, k3s writes the tombstone, fails, and systemd restarts it."""
    if not detach():
        return
    with open(os.path.join(stub, "watcher.pid"), "w") as f:
        f.write(str(os.getpid()))
    owner = int(os.environ.get("K3S_STUB_OWNER", "0") or 0)
    etcd_pid = os.path.join(stub, "etcd.pid")
    active = os.path.join(stub, "active-k3s")
    while True:
        time.sleep(0.2)
        if owner and not _alive(owner):
            stop_etcd(signal.SIGKILL)
            os._exit(0)
        if os.path.exists(os.path.join(stub, "stopping-k3s")):
            os._exit(0)
        if not os.path.exists(active) and not os.path.exists(os.path.join(stub, "activating-k3s")):
            stop_etcd(signal.SIGKILL)
            os._exit(0)
        if not pid_alive(etcd_pid):
            removed = "permanently removed" in _read(os.path.join(stub, "etcd-server.log"))
            if removed and os.path.isdir(data):
                open(os.path.join(data, "tombstone"), "w").close()
                log("this member was removed: wrote the tombstone; k3s exits")
            for f in ("active-k3s",):
                try:
                    os.remove(os.path.join(stub, f))
                except FileNotFoundError:
                    pass
            open(os.path.join(stub, "failed-k3s"), "w").close()
            delay = float(os.environ.get("K3S_STUB_RESTART_SEC", "5"))
            time.sleep(delay)
            if os.path.exists(os.path.join(stub, "failed-k3s")) and not os.path.exists(os.path.join(stub, "stopping-k3s")):
                log("systemd restarts k3s (Restart=always)")
                subprocess.Popen([os.path.join(os.path.dirname(__file__), "systemctl"), "start", "--no-block", "k3s"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os._exit(0)


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _read(path):
    try:
        return open(path).read()
    except FileNotFoundError:
        return ""


def reset(snapshot=None):
    """`k3s server --cluster-reset`: a one-member cluster from the data kept (or restored)."""
    cfg = config()
    ip, node = cfg["node-ip"], cfg["node-name"]
    name = member_name() or f"{node}-{secrets.token_hex(4)}"
    if snapshot:
        aside = os.path.join(db, f"etcd-old-{int(time.time())}")
        if os.path.exists(data):
            os.rename(data, aside)
        t = tls_dir(root)
        if not os.path.exists(f"{t}/server-ca.crt"):
            new_ca(t)
        if not os.path.exists(f"{t}/server-client.crt"):
            server_cert(t, ip)
        out = subprocess.run(["etcdctl", "snapshot", "restore", snapshot, "--data-dir", data, "--name", name,
                              "--initial-cluster", f"{name}=http://{ip}:2380",
                              "--initial-advertise-peer-urls", f"http://{ip}:2380"], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"etcd snapshot restore failed: {out.stderr.strip()}")
        with open(os.path.join(data, "name"), "w") as f:
            f.write(name)
    elif not os.path.exists(os.path.join(data, "member")):
        sys.exit("etcd database not found in " + data)
    p = spawn_etcd(ip, name, force_new=True)
    try:
        for _ in range(200):
            st = status(root, ip)
            if st and st[0]:
                break
            time.sleep(0.1)
        else:
            sys.exit("etcd did not come up with --force-new-cluster")
        # The bootstrap data under this token (pkg/cluster/bootstrap.go `ReconcileBootstrapData`):
        # none means another cluster's data or another token. A reset writes the datastore's
        # certificates to disk after backing up server/tls.
        out = ctl(root, ip, "get", bootstrap_key(cfg.get("token", "")), "--print-value-only")
        if out.returncode != 0 or not out.stdout.strip():
            sys.exit("no bootstrap data found in datastore - check server token value and verify datastore integrity")
        boot = json.loads(out.stdout)
        if os.path.isdir(ktls):
            shutil.copytree(ktls, os.path.join(server_dir, f"tls-{int(time.time())}"), dirs_exist_ok=True)
        for path, (content, mtime) in bootstrap_files(boot).items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(content)
            os.utime(path, (mtime, mtime))
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log("cluster reset: this member is now a one-member cluster")


def save(path):
    ip = config()["node-ip"]
    out = ctl(root, ip, "snapshot", "save", path, timeout=10)
    if out.returncode != 0:
        sys.exit(f"etcd snapshot save failed: {out.stderr.strip()}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "start":
        start()
        watch()
    elif cmd == "stop":
        stop_etcd()
    elif cmd == "members":
        print(json.dumps(members(root, [config().get("node-ip")])))
    elif cmd == "nodes":
        for name, ok in nodes(args):
            print(f"{name} {'True' if ok else 'False'}")
    elif cmd == "node-ready":
        name = args[-1]
        print("True" if any(n == name and ok for n, ok in nodes(args[:-1])) else "False", end="")
    elif cmd == "delete-node":
        delete_node(args[:-1], args[-1])
    elif cmd == "register":
        # A k3s agent's kubelet registers its Node through the server it joined.
        cfg = config()
        m = re.match(r"https://([^:]+):", cfg.get("server", ""))
        if m and host_root(m.group(1)):
            if detach():
                register_node(host_root(m.group(1)), m.group(1), cfg["node-name"], "worker", None)
                os._exit(0)
    elif cmd == "kubelet-labels":
        refused = kubelet_refused()
        if refused:
            log(f"kubelet refuses node labels it may not set on its own Node: {refused}")
            sys.exit("level=fatal msg=\"kubelet: unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: "
                     f"{refused}\"")
    elif cmd == "agent-auth":
        # A k3s agent authenticates to its server with its token's user and password
        # (pkg/clientaccess/token.go `parseToken`); the server checks its cred/passwd.
        cfg = config()
        m = re.match(r"https://([^:]+):", cfg.get("server", ""))
        pr = host_root(m.group(1)) if m else None
        if not pr:
            sys.exit("k3s agent: no server")
        rows = passwd_rows(_read(os.path.join(pr, "var/lib/rancher/k3s/server/cred/passwd")))
        token = cfg.get("token", "")
        # The token names its user (`K10<hash>::node:<pw>`, or `::server:` for the server token,
        # which agents may join with: k3s's own node-token file holds it); a bare one is `node`.
        user, pw = token.rsplit("::", 1)[-1].split(":", 1) if "::" in token else ("node", token)
        if user not in ("node", "server") or rows.get(user) != pw:
            sys.exit(f"level=fatal msg=\"Error: failed to get CA certs: https://{m.group(1)}:6443/cacerts: 401 Unauthorized (node password rejected)\"")
    elif cmd == "health":
        # Every member as this host's etcd lists it, with its health (a learner serves no
        # reads, so it never counts as a healthy voter): JSON [{"name", "learner", "healthy"}].
        ip = config().get("node-ip")
        out = []
        for m in members(root, [ip]):
            cip = client_ip(m)
            healthy = cip is not None and ctl(root, cip, "endpoint", "health", timeout=1).returncode == 0
            out.append({"name": m.get("name", ""), "learner": bool(m.get("isLearner")), "healthy": healthy})
        print(json.dumps(out))
    elif cmd == "put":
        r, ip = api_server([])
        sys.exit(ctl(r, ip, "put", args[0], args[1]).returncode)
    elif cmd == "get":
        r, ip = api_server([])
        out = ctl(r, ip, "get", args[0], "--print-value-only")
        print(out.stdout.strip(), end="")
        sys.exit(out.returncode)
    elif cmd == "reset":
        reset(args[0] if args else None)
    elif cmd == "save":
        save(args[0])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
