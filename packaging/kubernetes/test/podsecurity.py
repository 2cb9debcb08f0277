#!/usr/bin/env python3
"""The Pod Security Standards' checks, offline, on rendered manifests (for test-fleet-pods.sh):

    podsecurity.py LEVEL FILE...      LEVEL is baseline or restricted
    podsecurity.py controls FILE...   every check must catch a pod changed to break it

The first form reads every pod and pod template in the files (Pod, Deployment, DaemonSet,
StatefulSet, ReplicaSet, Job, CronJob) and prints `ok KIND/NAME` for each that the level admits,
or each check it fails with the reasons, as the API server's admission would name them
(`hostPath volumes`, `allowPrivilegeEscalation != false`, ...); exits 1 if any failed. The
checks are those of the level's latest version (Kubernetes 1.32: k8s.io/pod-security-admission
/policy), for Linux pods; restricted is baseline and more.

`controls` is the negative control: each pod that passes restricted is changed once per check,
in the way that check forbids, and must then fail that check and no other.
"""

import copy
import sys

import yaml

# Baseline: the capabilities a container may add (the container runtimes' defaults).
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted: the only volume types.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def containers(spec):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            yield c


def sc(obj):
    return obj.get("securityContext") or {}


def baseline(meta, spec):
    """{check: [reason, ...]} for what the baseline level forbids."""
    found = {}

    def forbid(check, reason):
        found.setdefault(check, []).append(reason)

    pod = sc(spec)
    for where in [pod] + [sc(c) for c in containers(spec)]:
        if (where.get("windowsOptions") or {}).get("hostProcess"):
            forbid("hostProcess", "hostProcess=true")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            forbid("host namespaces", f"{field}=true")
    for c in containers(spec):
        s = sc(c)
        name = c["name"]
        if s.get("privileged"):
            forbid("privileged", f'container "{name}" must not set securityContext.privileged=true')
        added = set((s.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            forbid("non-default capabilities", f'container "{name}" must not include {sorted(added)}')
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                forbid("hostPort", f'container "{name}" uses hostPort {port["hostPort"]}')
        if s.get("procMount", "Default") != "Default":
            forbid("procMount", f'container "{name}" must not set securityContext.procMount={s["procMount"]}')
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            forbid("hostPath volumes", f'volume "{volume["name"]}"')
    # AppArmor: the annotations and the field, Unconfined never.
    for key, value in ((meta.get("annotations") or {}).items()):
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            forbid("forbidden AppArmor profile", f"{key}={value}")
    for where in [pod] + [sc(c) for c in containers(spec)]:
        if (where.get("appArmorProfile") or {}).get("type") == "Unconfined":
            forbid("forbidden AppArmor profile", "appArmorProfile.type=Unconfined")
    # SELinux: a container type only, no user or role.
    for where in [pod] + [sc(c) for c in containers(spec)]:
        opts = where.get("seLinuxOptions") or {}
        if opts.get("type", "") not in SELINUX_TYPES:
            forbid("seLinuxOptions", f'type "{opts["type"]}"')
        for field in ("user", "role"):
            if opts.get(field):
                forbid("seLinuxOptions", f"{field} set")
    for where in [pod] + [sc(c) for c in containers(spec)]:
        if (where.get("seccompProfile") or {}).get("type") == "Unconfined":
            forbid("seccompProfile", "seccompProfile.type=Unconfined")
    for sysctl in pod.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            forbid("forbidden sysctls", sysctl["name"])
    return found


def restricted(meta, spec):
    """{check: [reason, ...]} for what the restricted level forbids (baseline's included)."""
    found = baseline(meta, spec)

    def forbid(check, reason):
        found.setdefault(check, []).append(reason)

    pod = sc(spec)
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            forbid("restricted volume types", f'volume "{volume["name"]}" uses {sorted(kinds)}')
    for c in containers(spec):
        s = sc(c)
        name = c["name"]
        if s.get("allowPrivilegeEscalation") is not False:
            forbid("allowPrivilegeEscalation != false",
                   f'container "{name}" must set securityContext.allowPrivilegeEscalation=false')
        # runAsNonRoot: the pod's, unless the container says otherwise; true in the end.
        if s.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            forbid("runAsNonRoot != true",
                   f'container "{name}" (pod or container must set securityContext.runAsNonRoot=true)')
        if s.get("runAsUser") == 0:
            forbid("runAsUser=0", f'container "{name}" must not set runAsUser=0')
        seccomp = (s.get("seccompProfile") or {}).get("type") or (pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            forbid("seccompProfile",
                   f'container "{name}" (pod or container must set securityContext.seccompProfile.type '
                   'to "RuntimeDefault" or "Localhost")')
        caps = s.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            forbid("unrestricted capabilities",
                   f'container "{name}" must set securityContext.capabilities.drop=["ALL"]')
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            forbid("unrestricted capabilities",
                   f'container "{name}" must not include {sorted(added)} in securityContext.capabilities.add')
    if pod.get("runAsUser") == 0:
        forbid("runAsUser=0", "pod must not set runAsUser=0")
    return found


LEVELS = {"baseline": baseline, "restricted": restricted}


def pods(files):
    """(KIND/NAME, metadata, pod spec) of every pod and pod template in the files."""
    for file in files:
        for d in yaml.safe_load_all(open(file)):
            if not d:
                continue
            kind, name = d["kind"], d["metadata"]["name"]
            if kind == "Pod":
                yield f"{kind}/{name}", d["metadata"], d["spec"]
            elif kind == "CronJob":
                t = d["spec"]["jobTemplate"]["spec"]["template"]
                yield f"{kind}/{name}", t.get("metadata") or {}, t["spec"]
            elif kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
                t = d["spec"]["template"]
                yield f"{kind}/{name}", t.get("metadata") or {}, t["spec"]


def first_container(spec):
    return next(containers(spec))


def in_container(path):
    return set_in("container.securityContext." + path)


def set_in(path):
    """A change that sets a (dotted) field of the pod spec, making the dicts it needs."""
    def change(meta, spec):
        *parents, last = path.split(".")
        target = spec
        for p in parents:
            target = first_container(target) if p == "container" else target.setdefault(p, {})
        value = CONTROL_VALUES[path]
        target[last] = copy.deepcopy(value)
    return change


CONTROL_VALUES = {
    "hostNetwork": True,
    "container.securityContext.privileged": True,
    "container.securityContext.capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
    "container.securityContext.procMount": "Unmasked",
    "container.securityContext.seLinuxOptions": {"user": "system_u"},
    "container.securityContext.seccompProfile": {"type": "Unconfined"},
    "container.securityContext.appArmorProfile": {"type": "Unconfined"},
    "container.securityContext.windowsOptions": {"hostProcess": True},
    "securityContext.sysctls": [{"name": "kernel.msgmax", "value": "65536"}],
    "container.securityContext.allowPrivilegeEscalation": True,
    "container.securityContext.runAsNonRoot": False,
    "container.securityContext.runAsUser": 0,
}


def add_volume(kind, source):
    def change(meta, spec):
        spec.setdefault("volumes", []).append({"name": "control", kind: source})
    return change


def host_port(meta, spec):
    first_container(spec).setdefault("ports", []).append({"containerPort": 8080, "hostPort": 8080})


def no_drop(meta, spec):
    first_container(spec)["securityContext"]["capabilities"] = {}


def add_chown(meta, spec):
    # Allowed by baseline (a runtime default), not by restricted.
    first_container(spec)["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["CHOWN"]}


def no_seccomp(meta, spec):
    spec["securityContext"].pop("seccompProfile", None)
    for c in containers(spec):
        sc(c).pop("seccompProfile", None)


def no_run_as_non_root(meta, spec):
    spec["securityContext"].pop("runAsNonRoot", None)
    for c in containers(spec):
        sc(c).pop("runAsNonRoot", None)


def apparmor_annotation(meta, spec):
    meta.setdefault("annotations", {})[
        f"container.apparmor.security.beta.kubernetes.io/{first_container(spec)['name']}"] = "unconfined"


# (the check that must catch it, what is changed, the change)
CONTROLS = [
    ("hostProcess", "a container with windowsOptions.hostProcess", in_container("windowsOptions")),
    ("host namespaces", "hostNetwork: true", set_in("hostNetwork")),
    ("privileged", "a privileged container", in_container("privileged")),
    ("non-default capabilities", "a container adding SYS_ADMIN", in_container("capabilities")),
    ("hostPath volumes", "a hostPath volume", add_volume("hostPath", {"path": "/run/tokend"})),
    ("hostPort", "a hostPort", host_port),
    ("forbidden AppArmor profile", "an unconfined AppArmor profile", in_container("appArmorProfile")),
    ("forbidden AppArmor profile", "an unconfined AppArmor annotation", apparmor_annotation),
    ("seLinuxOptions", "an SELinux user", in_container("seLinuxOptions")),
    ("procMount", "procMount: Unmasked", in_container("procMount")),
    ("seccompProfile", "seccomp Unconfined", in_container("seccompProfile")),
    ("forbidden sysctls", "an unsafe sysctl", set_in("securityContext.sysctls")),
    ("restricted volume types", "an nfs volume", add_volume("nfs", {"server": "nfs.example", "path": "/"})),
    ("allowPrivilegeEscalation != false", "allowPrivilegeEscalation: true", in_container("allowPrivilegeEscalation")),
    ("runAsNonRoot != true", "a container with runAsNonRoot: false", in_container("runAsNonRoot")),
    ("runAsNonRoot != true", "no runAsNonRoot anywhere", no_run_as_non_root),
    ("runAsUser=0", "a container with runAsUser: 0", in_container("runAsUser")),
    ("seccompProfile", "no seccomp profile anywhere", no_seccomp),
    ("unrestricted capabilities", "a container that drops nothing", no_drop),
    ("unrestricted capabilities", "a container adding CHOWN", add_chown),
]


ALSO = {"hostPath volumes": {"restricted volume types"},
        "non-default capabilities": {"unrestricted capabilities"}}


def controls(files):
    problems, tried = [], 0
    for name, meta, spec in pods(files):
        if restricted(meta, spec):
            continue
        for check, what, change in CONTROLS:
            m, s = copy.deepcopy(meta), copy.deepcopy(spec)
            change(m, s)
            failed = set(restricted(m, s))
            tried += 1
            # Where baseline forbids it, restricted's stricter check of the same field may join
            # in: a hostPath is no restricted volume type, SYS_ADMIN no restricted capability.
            extra = failed - {check} - ALSO.get(check, set())
            if check not in failed or extra:
                problems.append(f"{name} with {what}: failed {sorted(failed) or 'nothing'}, not just {check!r}")
    if problems or not tried:
        print("; ".join(problems) or "no pod passes restricted: nothing to change")
        return 1
    print(f"each of {len(CONTROLS)} changes caught by its check alone ({tried} changed pods)")
    return 0


def main():
    if sys.argv[1] == "controls":
        return controls(sys.argv[2:])
    level = LEVELS[sys.argv[1]]
    status = 0
    for name, meta, spec in pods(sys.argv[2:]):
        found = level(meta, spec)
        if not found:
            print(f"ok {name}")
        for check, reasons in found.items():
            print(f"{name}: {check} ({'; '.join(reasons)})")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
