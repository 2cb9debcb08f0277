#!/usr/bin/env python3
"""Stands in for a kubelet where Debian's podman 4.3 cannot: turns rendered manifests into Pods
that `podman kube play` runs, for packaging/kubernetes/test-pods.sh and test-fleet-pods.sh.

    kubelet.py RENDERED.yaml HOST_ROOT IMAGE [CONSUMER.yaml CONSUMER_IMAGE CONSUMER_COMMAND]
    kubelet.py update-configmap DIRECTORY NAME FILE
    kubelet.py pod KIND/NAME HOST_ROOT POD_NAME OUT.yaml OBJECTS.yaml... [--image CONTAINER=IMAGE]...
        [--command CONTAINER=COMMAND]... [--config CONFIGMAP:KEY=FILE]...

Writes HOST_ROOT/tokend-pod.yaml (and HOST_ROOT/consumer-pod.yaml); `update-configmap` replaces
one file of a ConfigMap directory written before, as the kubelet does on an update. `pod` makes
POD_NAME (written to OUT.yaml) from the pod template of the workload KIND/NAME (a DaemonSet, a
Deployment, ...) found in the OBJECTS files, which also hold the ConfigMaps and Secrets it
mounts; its containers get the images and commands given by name, and `--config` puts a file in
place of one key of a ConfigMap (the test's settings, as an overlay would). Every change is one
a kubelet would make, or one podman 4.3 needs; nothing else in the manifests is touched, so the
security contexts, the init container, the probes and the mounts are played as shipped:

- The DaemonSet's pod template becomes a Pod (podman plays Pods, not DaemonSets).
- hostPath volumes live under HOST_ROOT, so the test's "node" is a scratch directory.
- The ConfigMap is written as the kubelet writes it (`..data` a symlink to a timestamped
  directory, `config.yaml` a symlink through it) into HOST_ROOT/configmap, mounted from there:
  podman copies a ConfigMap once, and the test swaps `..data` the way the kubelet updates one.
  (`pod`: the pod's volumes go to HOST_ROOT/pods/POD_NAME/VOLUME, as the kubelet keeps them in
  /var/lib/kubelet/pods/UID/volumes.)
- The Secret's files are written to HOST_ROOT/secret as the kubelet would (mode from
  `defaultMode`, group from `fsGroup`, only the keys in `items` if it has them): podman 4.3
  writes a Secret's values still base64-encoded.
- An emptyDir is a directory made as the kubelet makes one: 0777, or with `fsGroup`, group
  fsGroup and setgid (2777). (`medium: Memory` is not honoured: a disk directory stands in for
  the tmpfs.)
- The pod runs on the host's network, where the test's IdP listens on loopback; container ports
  go (podman refuses port mappings on the host network). The pod's hostname is its name, as a
  kubelet sets it (`pod`; tokend names itself by it in a fleet).
- restartPolicy OnFailure: podman 4.3 applies the pod's policy to init containers too, and
  `Always` would run the init container forever.
- The image is the one the test built (`pod`: the images given, by container); the pods' names
  get $NAME_PREFIX in front.
"""

import base64
import os
import shutil
import sys
import time

import yaml

PREFIX = os.environ.get("NAME_PREFIX", "")


def literal_blocks(dumper, text):
    """Multi-line strings as `|` blocks: podman's YAML parser misreads long quoted ones."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


yaml.SafeDumper.add_representer(str, literal_blocks)


def write_configmap(data, directory):
    """The kubelet's AtomicWriter layout: files in `..<timestamp>`, `..data` pointing at it."""
    os.makedirs(directory, exist_ok=True)
    stamp = "..%s.%d" % (time.strftime("%Y_%m_%d_%H_%M_%S"), time.time_ns() % 1000000000)
    os.makedirs(os.path.join(directory, stamp))
    for name, text in data.items():
        with open(os.path.join(directory, stamp, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(directory, stamp, name), 0o644)
    data_link = os.path.join(directory, "..data")
    old = os.readlink(data_link) if os.path.islink(data_link) else None
    tmp = os.path.join(directory, "..data_tmp")
    os.symlink(stamp, tmp)
    os.rename(tmp, data_link)
    if old:
        shutil.rmtree(os.path.join(directory, old))
    for name in data:
        link = os.path.join(directory, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link)


def write_secret(secret, directory, mode, gid, items=None):
    os.makedirs(directory, exist_ok=True)
    values = {k: v.encode() for k, v in (secret.get("stringData") or {}).items()}
    values.update({k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()})
    # With `items`, only those keys, each at its path (a key that is missing fails the pod).
    paths = {i["key"]: i["path"] for i in items} if items else {k: k for k in values}
    for key, name in paths.items():
        value = values[key]
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(value)
        os.chown(path, 0, gid)
        os.chmod(path, mode)


def hostpaths(spec, root):
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            volume["hostPath"]["path"] = root + volume["hostPath"]["path"]


def use_image(spec, image):
    for c in spec.get("initContainers", []) + spec["containers"]:
        c["image"] = image


def empty_dir(directory, gid):
    """An emptyDir as the kubelet makes it: 0777; with fsGroup, that group and setgid."""
    os.makedirs(directory)
    if gid:
        os.chown(directory, 0, gid)
    os.chmod(directory, 0o2777 if gid else 0o777)


def find(objects, kind, name):
    (found,) = [d for d in objects if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def workload_pod(args):
    """`pod`: one Pod from a workload's template, its volumes under HOST_ROOT/pods/POD_NAME."""
    (workload, root, name, out), rest = args[:4], args[4:]
    files, images, commands, configs = [], {}, {}, {}
    while rest:
        arg = rest.pop(0)
        if arg in ("--image", "--command", "--config"):
            key, value = rest.pop(0).split("=", 1)
            {"--image": images, "--command": commands, "--config": configs}[arg][key] = value
        else:
            files.append(arg)
    objects = [d for f in files for d in yaml.safe_load_all(open(f)) if d]
    kind, workload_name = workload.split("/")
    template = find(objects, kind, workload_name)["spec"]["template"]
    spec = template["spec"]
    gid = spec.get("securityContext", {}).get("fsGroup", 0)
    volumes = os.path.join(root, "pods", PREFIX + name)
    hostpaths(spec, root)
    for volume in spec.get("volumes", []):
        directory = os.path.join(volumes, volume["name"])
        if "configMap" in volume:
            data = dict(find(objects, "ConfigMap", volume["configMap"]["name"])["data"])
            for key, source in configs.items():
                configmap, key = key.split(":")
                if configmap == volume["configMap"]["name"]:
                    with open(source) as f:
                        data[key] = f.read()
            write_configmap(data, directory)
            volume.pop("configMap")
        elif "secret" in volume:
            secret = find(objects, "Secret", volume["secret"]["secretName"])
            write_secret(secret, directory, volume["secret"].get("defaultMode", 0o644), gid,
                         volume["secret"].get("items"))
            volume.pop("secret")
        elif "emptyDir" in volume:
            empty_dir(directory, gid)
            volume.pop("emptyDir")
        else:
            continue
        volume["hostPath"] = {"path": directory, "type": "Directory"}
    spec["hostNetwork"] = True
    spec["hostname"] = PREFIX + name
    spec["restartPolicy"] = "OnFailure"
    for c in spec.get("initContainers", []) + spec["containers"]:
        c.pop("ports", None)
        if c["name"] in images:
            c["image"] = images[c["name"]]
        if c["name"] in commands:
            c["command"] = ["sh", "-c", commands[c["name"]].strip()]
            c.pop("args", None)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": PREFIX + name,
            "labels": template["metadata"].get("labels", {}),
            "annotations": template["metadata"].get("annotations", {}),
        },
        "spec": spec,
    }
    with open(out, "w") as f:
        yaml.safe_dump(pod, f, sort_keys=False)


def main():
    if sys.argv[1] == "pod":
        workload_pod(sys.argv[2:])
        return
    if sys.argv[1] == "update-configmap":
        directory, name, source = sys.argv[2:5]
        with open(source) as f:
            write_configmap({name: f.read()}, directory)
        return
    rendered, root, image = sys.argv[1:4]
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (daemonset,) = by_kind["DaemonSet"]
    template = daemonset["spec"]["template"]
    spec = template["spec"]
    hostpaths(spec, root)
    for volume in spec["volumes"]:
        if "configMap" in volume:
            (cm,) = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == volume["configMap"]["name"]]
            directory = os.path.join(root, "configmap")
            write_configmap(cm["data"], directory)
            volume.pop("configMap")
            volume["hostPath"] = {"path": directory, "type": "Directory"}
        elif "secret" in volume:
            (secret,) = [s for s in by_kind["Secret"] if s["metadata"]["name"] == volume["secret"]["secretName"]]
            directory = os.path.join(root, "secret")
            gid = spec.get("securityContext", {}).get("fsGroup", 0)
            write_secret(secret, directory, volume["secret"].get("defaultMode", 0o644), gid)
            volume.pop("secret")
            volume["hostPath"] = {"path": directory, "type": "Directory"}
    spec["hostNetwork"] = True
    spec["restartPolicy"] = "OnFailure"
    for c in spec["containers"]:
        c.pop("ports", None)
    use_image(spec, image)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": PREFIX + daemonset["metadata"]["name"],
            "labels": template["metadata"].get("labels", {}),
            "annotations": template["metadata"].get("annotations", {}),
        },
        "spec": spec,
    }
    with open(os.path.join(root, "tokend-pod.yaml"), "w") as f:
        yaml.safe_dump(pod, f, sort_keys=False)

    if len(sys.argv) > 4:
        consumer_file, consumer_image, command = sys.argv[4:7]
        (consumer,) = [d for d in yaml.safe_load_all(open(consumer_file)) if d]
        cspec = consumer["spec"]
        hostpaths(cspec, root)
        use_image(cspec, consumer_image)
        cspec["containers"][0]["command"] = ["sh", "-c", command.strip()]
        cspec["restartPolicy"] = "Never"
        consumer["metadata"].pop("namespace", None)
        consumer["metadata"]["name"] = PREFIX + consumer["metadata"]["name"]
        with open(os.path.join(root, "consumer-pod.yaml"), "w") as f:
            yaml.safe_dump(consumer, f, sort_keys=False)


if __name__ == "__main__":
    main()
