#!/usr/bin/env python3
"""What the kustomize base promises, read off the rendered objects (for test-pods.sh):

    promises.py RENDERED_BASE.yaml CONSUMER.yaml UID SOCKET_GID READER_GID

Prints the promises kept on one line and exits 0, or the ones broken and exits 1. The schema
validator cannot see these: they are about what the objects mean together (the identities and
groups of config.yaml, the DaemonSet and the consumer agreeing; the probes; the policies).
"""

import sys

import yaml


def main():
    docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
    (consumer,) = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
    uid, socket_gid, reader_gid = map(int, sys.argv[3:6])
    ds = docs["DaemonSet"]["spec"]
    pod = ds["template"]["spec"]
    (c,) = pod["containers"]
    (init,) = pod["initContainers"]
    config = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])
    sc = pod["securityContext"]
    problems = []

    def want(ok, what):
        if not ok:
            problems.append(what)

    want(sc["runAsNonRoot"] and (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (uid, uid, uid),
         f"runs as non-root {uid}")
    want(sc["seccompProfile"]["type"] == "RuntimeDefault", "seccomp RuntimeDefault")
    want(c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                  "capabilities": {"drop": ["ALL"]}}, "container securityContext")
    want(init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]},
         "init container: CAP_CHOWN only")
    want(f"{uid}:{uid}" in init["args"], "the init container gives the directories to tokend's uid")
    want(pod["priorityClassName"] == "system-node-critical", "priority class")
    want(pod["tolerations"] == [{"operator": "Exists"}], "tolerates every taint")
    want(ds["updateStrategy"]["rollingUpdate"]["maxSurge"] == 0, "maxSurge 0")
    want(all(v["hostPath"]["type"] == "DirectoryOrCreate" for v in pod["volumes"] if "hostPath" in v),
         "hostPath DirectoryOrCreate")
    want(not any("subPath" in m for m in c["volumeMounts"]), "no subPath mounts")
    for probe, check in (("livenessProbe", "live"), ("readinessProbe", "ready")):
        cmd = c[probe]["exec"]["command"]
        want(cmd[:3] == ["/usr/bin/tokend", "probe", check] and config["socket"]["path"] in cmd,
             f"{probe}: tokend probe {check} on the socket")
    port = c["ports"][0]["containerPort"]
    want(int(config["metrics"]["listen"].rsplit(":", 1)[1]) == port, "metrics port = containerPort")
    policy = docs["NetworkPolicy"]["spec"]
    want(policy["podSelector"]["matchLabels"].items() <= ds["template"]["metadata"]["labels"].items(),
         "the NetworkPolicy selects the pods")
    want([p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [port],
         "the NetworkPolicy admits the metrics port only")
    want(docs["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged",
         "Pod Security admits hostPath in the namespace")
    want("limits" in c["resources"] and "requests" in c["resources"], "requests and limits")
    groups = set(sc["supplementalGroups"])
    want(config["socket"]["group"] == socket_gid and socket_gid in groups, "tokend is in the socket's group")
    for name, client in config["clients"].items():
        for output in client["outputs"]:
            want(output.get("group") == reader_gid and reader_gid in groups,
                 f"{name}'s files get a readers group tokend is in")
        want(client["readers"]["groups"] == [reader_gid], f"{name}'s socket readers are that group")
    csc = consumer["spec"]["securityContext"]
    want(csc["runAsUser"] not in (uid, 0), "the consumer is neither tokend nor root")
    want({socket_gid, reader_gid} <= set(csc["supplementalGroups"]),
         "the consumer has the socket's group and billing's readers group")
    if problems:
        print("; ".join(problems))
        sys.exit(1)
    print(f"non-root {uid}, read-only root, no capabilities, seccomp, CAP_CHOWN-only init, node-critical, "
          f"every toleration, maxSurge 0, no subPath, exec probes, metrics port = containerPort = "
          f"NetworkPolicy port, Pod Security privileged, socket group {socket_gid} and readers group "
          f"{reader_gid} held by tokend and the consumer")


if __name__ == "__main__":
    main()
