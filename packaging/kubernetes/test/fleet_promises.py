#!/usr/bin/env python3
"""What the fleet component and the sidecar example promise, read off the rendered objects (for
test-fleet-pods.sh):

    fleet_promises.py RENDERED_OVERLAY.yaml [SIDECAR.yaml]

RENDERED_OVERLAY is the base with packaging/kubernetes/fleet added (`kubectl kustomize` of an
overlay); SIDECAR the sidecar example. Prints the promises kept on one line and exits 0, or the
ones broken and exits 1. The schema validator cannot see these: they are about what the objects
mean together — which pod holds which secret, which configuration each reads, whether followers
and refreshers would meet on the same Redis keys.
"""

import posixpath
import sys

import yaml

# A client's keys that hold or name its credentials (a follower has none of them).
CREDENTIALS = ("client_secret", "private_key", "client_certificate", "client_key")
# What is left of a client, or of `defaults`, that decides its request (the fleet's key for it).
REQUEST = ("token_url", "client_id", "audience", "scope", "resource", "organization", "auth",
           "validate")


def main():
    objects = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    sidecar = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d] if len(sys.argv) > 2 else []
    problems = []

    def want(ok, what):
        if not ok:
            problems.append(what)

    def one(kind, name=None, among=objects):
        found = [d for d in among if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
        if len(found) != 1:
            raise SystemExit(f"expected one {kind} {name or ''}, found {len(found)}")
        return found[0]

    daemonset = one("DaemonSet", "tokend")
    refresher = one("Deployment", "tokend-refresher")

    def pod_of(workload):
        spec = workload["spec"]["template"]["spec"]
        (tokend,) = [c for c in spec["containers"] if c["name"] == "tokend"]
        mounts = {m["mountPath"]: m for m in tokend["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        config_mount = mounts["/etc/tokend/config"]
        config_map = one("ConfigMap", volumes[config_mount["name"]]["configMap"]["name"], objects + sidecar)
        config = yaml.safe_load(config_map["data"]["config.yaml"])
        return spec, tokend, mounts, volumes, config

    def secret_files(mounts, volumes):
        """Every file a Secret volume puts in the container: path -> (Secret, key)."""
        files = {}
        for path, m in mounts.items():
            secret = volumes[m["name"]].get("secret")
            if not secret:
                continue
            items = secret.get("items")
            if items is None:
                keys = secret_keys(secret["secretName"])
                # A Secret the render does not hold: any key of it, written "*".
                items = [{"key": k, "path": k} for k in keys or ["*"]]
            for item in items:
                files[posixpath.join(path, item["path"])] = (secret["secretName"], item["key"])
        return files

    def secret_keys(name):
        found = [d for d in objects if d["kind"] == "Secret" and d["metadata"]["name"] == name]
        if not found:
            return None  # made by the user (tokend-fleet): its keys are the volume's items
        return sorted(set(found[0].get("data") or {}) | set(found[0].get("stringData") or {}))

    def credential_files(config):
        files = []
        for name, client in (config.get("clients") or {}).items():
            for key in CREDENTIALS:
                source = (client or {}).get(key)
                if isinstance(source, dict) and "file" in source:
                    files.append(source["file"])
                elif isinstance(source, str):
                    files.append(source)
        return files

    def has_credentials(config):
        return [f"{name}.{key}" for name, client in (config.get("clients") or {}).items()
                for key in CREDENTIALS if key in (client or {})] + \
               [f"defaults.{key}" for key in CREDENTIALS if key in (config.get("defaults") or {})]

    def fleet_files(config):
        fleet = config["fleet"]
        return [fleet["key"]["file"], fleet["redis"]["password"]["file"]]

    def without_credentials(config, drop_redis_user):
        c = yaml.safe_load(yaml.safe_dump(config))
        c["fleet"].pop("role", None)
        if drop_redis_user:
            c["fleet"]["redis"].pop("username", None)
            c["fleet"]["redis"].pop("password", None)
        for client in (c.get("clients") or {}).values():
            for key in CREDENTIALS:
                client.pop(key, None)
        return c

    f_spec, f_tokend, f_mounts, f_volumes, f_config = pod_of(daemonset)
    r_spec, r_tokend, r_mounts, r_volumes, r_config = pod_of(refresher)
    f_files = secret_files(f_mounts, f_volumes)
    r_files = secret_files(r_mounts, r_volumes)

    # The followers: no client secret in their configuration or their pods.
    want(f_config.get("fleet", {}).get("role") == "follower", "the DaemonSet's tokend is a follower")
    want(not has_credentials(f_config),
         f"the followers' configuration holds no credentials (found {has_credentials(f_config)})")
    client_secrets = {r_files.get(f) for f in credential_files(r_config)} - {None}
    on_nodes = set(f_files.values())
    leaked = sorted(f"{s}/{k}" for s, k in client_secrets if (s, k) in on_nodes or (s, "*") in on_nodes)
    want(not leaked, f"the DaemonSet mounts no client secret (it mounts {leaked})")
    want(not [p for p in f_files if p.startswith("/etc/tokend/secrets")],
         "the DaemonSet mounts nothing at /etc/tokend/secrets")
    refresher_password = r_files.get(r_config["fleet"]["redis"]["password"]["file"])
    want(refresher_password not in set(f_files.values()),
         f"the DaemonSet does not mount the refreshers' Redis password ({refresher_password})")
    want(all(f in f_files for f in fleet_files(f_config)),
         f"the followers' fleet key and Redis password are mounted ({fleet_files(f_config)})")

    # The refreshers: the client secrets are there, and nothing of the node's.
    want(r_config.get("fleet", {}).get("role") == "refresher", "the Deployment's tokend is a refresher")
    want(refresher["spec"]["replicas"] >= 2, "at least two refreshers")
    needed = credential_files(r_config)
    want(needed and all(f in r_files for f in needed),
         f"every client secret the refreshers name is mounted from a Secret ({needed})")
    want(all(f in r_files for f in fleet_files(r_config)),
         f"the refreshers' fleet key and Redis password are mounted ({fleet_files(r_config)})")
    want(not any("hostPath" in v for v in r_spec["volumes"]), "the refreshers mount nothing of the node's")
    run_volume = r_volumes[r_mounts["/run/tokend"]["name"]]
    want("emptyDir" in run_volume, "the refreshers' /run/tokend is an emptyDir")

    # Both: one fleet, one key, the same clients.
    fleet_secret = {f_files[f_config["fleet"]["key"]["file"]][0], r_files[r_config["fleet"]["key"]["file"]][0]}
    want(len(fleet_secret) == 1,
         f"the followers and the refreshers read the fleet's key from one Secret ({fleet_secret})")
    want(without_credentials(f_config, True) == without_credentials(r_config, True),
         "the two configurations are the same but for role, Redis user and credentials")
    want(f_config["fleet"]["redis"].get("username") != r_config["fleet"]["redis"].get("username")
         or "username" not in f_config["fleet"]["redis"],
         "followers and refreshers log in to Redis as different users")

    # The same identity and hardening as the DaemonSet's tokend.
    want(r_tokend["securityContext"] == f_tokend["securityContext"],
         "the refreshers' container is hardened as the DaemonSet's")
    f_sc, r_sc = f_spec["securityContext"], r_spec["securityContext"]
    want(r_sc == f_sc, "the refreshers' pod security context is the DaemonSet's (uid, groups, seccomp)")
    want(r_spec.get("automountServiceAccountToken") is False, "no API token in the refreshers")
    want(all(r_tokend[p] == f_tokend[p] for p in ("livenessProbe", "readinessProbe")),
         "the refreshers are probed as the DaemonSet")
    want(r_tokend["image"] == f_tokend["image"],
         f"one image for both ({r_tokend['image']}, {f_tokend['image']})")

    # Labels: the DaemonSet's selector must not take the refreshers' pods; the policies do.
    r_labels = refresher["spec"]["template"]["metadata"]["labels"]
    ds_selector = daemonset["spec"]["selector"]["matchLabels"]
    want(not ds_selector.items() <= r_labels.items(), "the DaemonSet's selector does not match the refreshers")
    want(refresher["spec"]["selector"]["matchLabels"].items() <= r_labels.items(),
         "the Deployment selects its pods")
    port = r_tokend["ports"][0]["containerPort"]
    want(int(r_config["metrics"]["listen"].rsplit(":", 1)[1]) == port,
         "the refreshers' metrics port = containerPort")
    policies = [p["spec"] for p in objects if p["kind"] == "NetworkPolicy"
                and p["spec"]["podSelector"]["matchLabels"].items() <= r_labels.items()]
    want([[q["port"] for rule in p["ingress"] for q in rule["ports"]] for p in policies] == [[port]],
         "one NetworkPolicy selects the refreshers and admits the metrics port only")
    pdb = one("PodDisruptionBudget", "tokend-refresher")["spec"]
    want(pdb["selector"]["matchLabels"].items() <= r_labels.items() and pdb["minAvailable"] >= 1,
         "a disruption budget keeps a refresher")

    said = ("the DaemonSet is a follower with no client secret or refresher password mounted; "
            f"{refresher['spec']['replicas']} refreshers hold the client secrets, no hostPath; both read "
            f"fleet.key from the Secret {fleet_secret.pop()}; the configurations differ only in role, Redis "
            "user and credentials; same hardening, own labels, NetworkPolicy and PDB")

    if sidecar:
        app = one("Deployment", among=sidecar)
        spec = app["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        containers = {c["name"]: c for c in spec["containers"]}
        s_spec, s_tokend, s_mounts, s_volumes, s_config = pod_of(app)
        s_files = secret_files(s_mounts, s_volumes)
        want(s_config["fleet"]["role"] == "follower" and not has_credentials(s_config),
             "the sidecar is a follower without credentials")
        want(all(f in s_files for f in fleet_files(s_config)),
             "the sidecar's fleet key and Redis password are mounted")
        want([s_files[f] for f in fleet_files(s_config)] == [f_files[f] for f in fleet_files(f_config)],
             "the sidecar reads the same Secret keys as the followers")
        want(not any("hostPath" in v for v in spec["volumes"]),
             "the sidecar's pod mounts nothing of the node's")
        shared = s_mounts["/run/tokend"]["name"]
        want("emptyDir" in volumes[shared], "tokend and the app share an emptyDir")
        for name, c in containers.items():
            if name == "tokend":
                continue
            mounted = {m["name"]: m for m in c.get("volumeMounts", [])}
            mount = mounted.get(shared, {})
            want(mount.get("readOnly") is True and "subPath" not in mount,
                 f"the app container {name} mounts the tokens' directory read-only, not a subPath")
            want(not [v for v in mounted if "secret" in volumes[v]],
                 f"the app container {name} mounts no Secret")
        paths = [o["path"] for c in s_config["clients"].values() for o in c.get("outputs", [])]
        paths.append(s_config["socket"]["path"])
        want(all(posixpath.dirname(p) == s_mounts["/run/tokend"]["mountPath"] for p in paths),
             "the sidecar's files and socket are in the shared volume")
        # The same requests as the refreshers' clients, so that the sidecar finds their tokens.
        def requests(config):
            defaults = config.get("defaults") or {}
            return {name: {k: (client or {}).get(k, defaults.get(k)) for k in REQUEST}
                    for name, client in config["clients"].items()}
        want(requests(s_config) == requests(r_config), "the sidecar's clients ask as the refreshers' do")
        same_fleet = {k: v for k, v in s_config["fleet"]["redis"].items() if k != "password"} == \
            {k: v for k, v in f_config["fleet"]["redis"].items() if k != "password"} and \
            s_config["fleet"]["namespace"] == r_config["fleet"]["namespace"]
        want(same_fleet, "the sidecar uses the followers' Redis, user and namespace")
        said += ("; the sidecar is a follower without credentials sharing an emptyDir (read-only for the "
                 "app, which mounts no Secret) and asking as the refreshers do")

    if problems:
        print("; ".join(problems))
        sys.exit(1)
    print(said)


if __name__ == "__main__":
    main()
