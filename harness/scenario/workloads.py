"""A scenario's topology read from the manifests a team deploys (``workloads:``).

Each pod-making workload (Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job, CronJob, a bare Pod) becomes **one probe pod** named
after the workload, with the pod template's labels and its containers' ports
(number, protocol, name; native sidecars, init containers with ``restartPolicy:
Always``, included). One pod per workload, whatever ``replicas`` says: replicas of
one template carry the same labels and ports, so every policy treats them alike
and one stands for all (a workload scaled to zero runs no pod and is left out).
The workload's own images never run: the probe pod serves its ports instead.

Namespaces give namespace labels; Services (with a selector and a cluster IP)
become Services. Other kinds are ignored and named in one note. A manifest
without a namespace goes to the entry's ``namespace:`` (as ``kubectl apply -n``),
else to ``default``; one whose namespace differs from ``namespace:`` is an error,
as kubectl makes it. A directory stands for its ``.yaml``, ``.yml`` and ``.json``
files (not its subdirectories, as ``kubectl apply -f DIR``); ``kustomize: DIR``
is rendered with ``kubectl kustomize``. Hand-declared namespaces, pods and
Services are merged in by :func:`merge_workloads` and override what the
manifests say.

Errors name the manifest file, the document and the field.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import ScenarioError
from harness.core.selectors import check_label_key, check_label_value
from harness.core.services import ServicePort, ServiceSpec
from harness.core.topology import (
    PORT_NAME_FORM,
    NamespaceSpec,
    PodSpec,
    PortProtocol,
    PortSpec,
    Protocol,
    check_port_name,
    is_dns_label,
)
from harness.scenario.sources import FileSource, relative_to_scenario
from harness.scenario.yamlload import load_all

#: Files of a directory read as manifests.
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
#: Most manifest files one entry may stand for.
MAX_FILES = 1000
#: Longest ``kubectl kustomize`` may take.
KUSTOMIZE_TIMEOUT = 60.0
DEFAULT_NAMESPACE = "default"

#: kind → (API groups it is served by, path from the manifest to its pod template).
_WORKLOADS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Deployment": (("apps",), ("spec", "template")),
    "StatefulSet": (("apps",), ("spec", "template")),
    "DaemonSet": (("apps",), ("spec", "template")),
    "ReplicaSet": (("apps",), ("spec", "template")),
    "ReplicationController": (("",), ("spec", "template")),
    "Job": (("batch",), ("spec", "template")),
    "CronJob": (("batch",), ("spec", "jobTemplate", "spec", "template")),
    "Pod": (("",), ()),
}


@dataclass(frozen=True)
class WorkloadSet:
    """What a scenario's manifests declare, in the order they were read."""

    namespaces: tuple[NamespaceSpec, ...] = ()
    pods: tuple[PodSpec, ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    #: Manifests left out, each ``Kind namespace/name (why)``.
    ignored: tuple[str, ...] = field(default=())
    #: The files (or ``kustomize DIR``) read.
    files: tuple[str, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        """One line listing what was ignored, or nothing."""
        if not self.ignored:
            return ()
        shown = ", ".join(self.ignored[:10]) + (f" and {len(self.ignored) - 10} more" if len(self.ignored) > 10 else "")
        return (f"workloads: ignored {len(self.ignored)} manifest(s) the harness does not model: {shown}",)


@dataclass(frozen=True)
class _Document:
    source: str  # the file as shown in messages
    index: int  # 1-based, among the file's documents
    count: int
    body: Mapping[str, Any]

    def where(self, field_path: str) -> str:
        prefix = f"document {self.index}" if self.count > 1 else ""
        return ".".join(p for p in (prefix, field_path) if p)

    def fail(self, field_path: str, message: str, expected: str = "") -> ScenarioError:
        return ScenarioError(self.source, self.where(field_path), message, expected)


# -- the workloads: entries ------------------------------------------------------------


def read_workloads(raw: object, scenario: Path, source: FileSource) -> WorkloadSet:
    """The manifests the ``workloads:`` list of ``scenario`` names, read."""
    where = str(scenario)
    if not isinstance(raw, list) or not raw:
        raise ScenarioError(
            where, "workloads", "expected a non-empty list", "entries such as {path: deploy/} or {kustomize: overlays/prod}"
        )
    documents: list[tuple[_Document, str | None]] = []
    files: list[str] = []
    for i, item in enumerate(raw):
        path = f"workloads[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if (
            not isinstance(item, Mapping)
            or set(item) - {"path", "kustomize", "namespace"}
            or ("path" in item) == ("kustomize" in item)
        ):
            raise ScenarioError(
                where, path, "expected path or kustomize (and optionally namespace)", "{path: FILE-OR-DIR, namespace: NS}"
            )
        namespace = item.get("namespace")
        if namespace is not None and not is_dns_label(namespace):
            raise ScenarioError(where, f"{path}.namespace", f"{namespace!r} is not a namespace name", "a lowercase DNS label")
        if "kustomize" in item:
            target = _entry_path(item["kustomize"], scenario, where, f"{path}.kustomize")
            label, text = render_kustomization(target, source, where, f"{path}.kustomize")
            files.append(label)
            documents += [(doc, namespace) for doc in _documents(text, label)]
            continue
        target = _entry_path(item["path"], scenario, where, f"{path}.path")
        for file in manifest_files(target, source, where, f"{path}.path"):
            label = source.display(file)
            files.append(label)
            documents += [(doc, namespace) for doc in _documents(source.read_text(file), label)]
    return _collect(documents, tuple(files))


def read_manifests(paths: Sequence[Path], source: FileSource, namespace: str | None = None) -> WorkloadSet:
    """Manifests from files or directories given directly (``python -m harness init``)."""
    documents: list[tuple[_Document, str | None]] = []
    files: list[str] = []
    for target in paths:
        for file in manifest_files(target, source, str(target), ""):
            label = source.display(file)
            files.append(label)
            documents += [(doc, namespace) for doc in _documents(source.read_text(file), label)]
    return _collect(documents, tuple(files))


def _entry_path(raw: object, scenario: Path, where: str, field_path: str) -> Path:
    if not isinstance(raw, str) or not raw:
        raise ScenarioError(where, field_path, "expected a path", "a file or directory relative to the scenario")
    return relative_to_scenario(scenario, raw)


def manifest_files(target: Path, source: FileSource, where: str, field_path: str) -> tuple[Path, ...]:
    """``target`` itself, or the manifest files directly in it when it is a directory."""
    if source.is_file(target):
        return (target,)
    if source.is_dir(target):
        found = tuple(p for p in source.iterdir(target) if p.suffix in MANIFEST_SUFFIXES and source.is_file(p))
        if not found:
            raise ScenarioError(where, field_path, f"{source.display(target)} holds no .yaml, .yml or .json file")
        if len(found) > MAX_FILES:
            raise ScenarioError(
                where, field_path, f"{source.display(target)} holds {len(found)} manifest files", f"at most {MAX_FILES}"
            )
        return found
    raise ScenarioError(where, field_path, f"{source.display(target)} does not exist", "a file or directory of manifests")


def render_kustomization(target: Path, source: FileSource, where: str, field_path: str) -> tuple[str, str]:
    """(label, rendered YAML) of ``kubectl kustomize DIR``."""
    label = f"kustomize {source.display(target)}"
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ScenarioError(
            where,
            field_path,
            "rendering a kustomization needs kubectl on PATH (`kubectl kustomize` renders it), and there is none",
            "kubectl installed, or the rendered manifests given with path:",
        )
    if source.label != "working tree" or not source.is_dir(target):
        raise ScenarioError(where, field_path, f"{source.display(target)} is not a directory of the working tree")
    try:
        done = subprocess.run(
            [kubectl, "kustomize", str(target)],
            capture_output=True,
            timeout=KUSTOMIZE_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ScenarioError(where, field_path, f"kubectl kustomize {target} took more than {KUSTOMIZE_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise ScenarioError(where, field_path, f"kubectl kustomize {target} failed: {said[-1] if said else done.returncode}")
    return label, done.stdout.decode("utf-8", errors="replace")


def _documents(text: str, label: str) -> Iterator[_Document]:
    docs = [d for d in load_all(text, label) if d is not None]
    flat: list[Mapping[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, Mapping):
            raise ScenarioError(label, f"document {len(flat) + 1}", "not a mapping", "a Kubernetes manifest")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            flat += [item for item in doc["items"] if isinstance(item, Mapping)]  # `kubectl get -o yaml` output
        else:
            flat.append(doc)
    for i, body in enumerate(flat):
        yield _Document(label, i + 1, len(flat), body)


# -- manifests to topology ----------------------------------------------------------------


def _kind_of(doc: _Document) -> tuple[str, str]:
    kind = doc.body.get("kind")
    api = doc.body.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        raise doc.fail("kind", "required field is missing", "the manifest's kind, such as Deployment")
    if not isinstance(api, str) or not api:
        raise doc.fail("apiVersion", "required field is missing", "the manifest's apiVersion, such as apps/v1")
    group = api.rpartition("/")[0] if "/" in api else ""
    return kind, group


def _metadata(doc: _Document) -> Mapping[str, Any]:
    meta = doc.body.get("metadata")
    if not isinstance(meta, Mapping):
        raise doc.fail("metadata", "required field is missing", "a mapping with name (and namespace)")
    return meta


def _name(doc: _Document, what: str) -> str:
    name = _metadata(doc).get("name")
    if not isinstance(name, str) or not name:
        hint = " (generateName cannot name a probe pod)" if "generateName" in _metadata(doc) else ""
        raise doc.fail("metadata.name", f"required field is missing{hint}", f"the {what}'s name")
    if not is_dns_label(name):
        raise doc.fail("metadata.name", f"{name!r} is not a DNS label", f"a {what} name of lowercase letters, digits and '-'")
    return name


def _namespace(doc: _Document, override: str | None) -> str:
    declared = _metadata(doc).get("namespace")
    if declared is not None and not is_dns_label(declared):
        raise doc.fail("metadata.namespace", f"{declared!r} is not a namespace name", "a lowercase DNS label")
    if override is not None and declared is not None and declared != override:
        raise doc.fail(
            "metadata.namespace",
            f"the manifest's namespace {declared!r} differs from the entry's namespace {override!r}",
            "the same namespace, or no namespace in the manifest (kubectl apply -n refuses it too)",
        )
    return str(declared or override or DEFAULT_NAMESPACE)


def _labels(doc: _Document, raw: object, field_path: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise doc.fail(field_path, "not a mapping", "labels: a mapping of keys to values")
    for key, value in raw.items():
        problem = check_label_key(key) or check_label_value(value)
        if problem:
            raise doc.fail(f"{field_path}.{key}", problem)
    return dict(raw)


def _dig(doc: _Document, path: tuple[str, ...]) -> Mapping[str, Any]:
    node: Any = doc.body
    for i, key in enumerate(path):
        node = node.get(key) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            raise doc.fail(".".join(path[: i + 1]), "required field is missing", "the workload's pod template")
    found: Mapping[str, Any] = node
    return found


def _container_ports(doc: _Document, spec: Mapping[str, Any], field_path: str) -> tuple[PortSpec, ...]:
    ports: list[PortSpec] = []
    seen: dict[PortProtocol, str] = {}
    names: dict[str, str] = {}
    groups = [("containers", spec.get("containers"), False), ("initContainers", spec.get("initContainers"), True)]
    for group, containers, sidecars_only in groups:
        if containers is None:
            continue
        if not isinstance(containers, list):
            raise doc.fail(f"{field_path}.{group}", "not a list", "a list of containers")
        for c, container in enumerate(containers):
            cpath = f"{field_path}.{group}[{c}]"
            if not isinstance(container, Mapping):
                raise doc.fail(cpath, "not a mapping", "a container")
            if sidecars_only and container.get("restartPolicy") != "Always":
                continue  # an init container that ends before the pod serves
            raw_ports = container.get("ports") or []
            if not isinstance(raw_ports, list):
                raise doc.fail(f"{cpath}.ports", "not a list", "a list of container ports")
            for p, entry in enumerate(raw_ports):
                ppath = f"{cpath}.ports[{p}]"
                spec_port = _container_port(doc, entry, ppath)
                if spec_port.key in seen:
                    if seen[spec_port.key] == (spec_port.name or ""):
                        continue  # the same port declared by two containers: one port of the pod
                    raise doc.fail(ppath, f"{spec_port.key} is declared twice with different names")
                if spec_port.name is not None:
                    if spec_port.name in names:
                        raise doc.fail(f"{ppath}.name", f"port name {spec_port.name!r} is used twice in the pod")
                    names[spec_port.name] = ppath
                seen[spec_port.key] = spec_port.name or ""
                ports.append(spec_port)
    return tuple(ports)


def _container_port(doc: _Document, entry: object, path: str) -> PortSpec:
    if not isinstance(entry, Mapping):
        raise doc.fail(path, "not a mapping", "a container port {containerPort: 8080, protocol: TCP, name: http}")
    number = entry.get("containerPort")
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
        raise doc.fail(f"{path}.containerPort", f"got {number!r}", "a port number 1-65535")
    protocol = _protocol(doc, entry.get("protocol", "TCP"), f"{path}.protocol")
    name = entry.get("name")
    if name is not None:
        problem = check_port_name(name)
        if problem:
            raise doc.fail(f"{path}.name", problem, PORT_NAME_FORM)
    return PortSpec(number, protocol, name)


def _protocol(doc: _Document, raw: object, path: str) -> Protocol:
    try:
        return Protocol(raw)
    except ValueError:
        raise doc.fail(path, f"got {raw!r}", "TCP, UDP or SCTP") from None


def _pod(doc: _Document, kind: str, override: str | None) -> PodSpec | str:
    """The probe pod standing for a workload, or why it is left out."""
    name = _name(doc, kind)
    namespace = _namespace(doc, override)
    _, template_path = _WORKLOADS[kind]
    template = _dig(doc, template_path) if template_path else doc.body
    prefix = ".".join(template_path)
    meta = template.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise doc.fail(f"{prefix}.metadata".lstrip("."), "not a mapping")
    spec = template.get("spec")
    spec_path = f"{prefix}.spec".lstrip(".")
    if not isinstance(spec, Mapping):
        raise doc.fail(spec_path, "required field is missing", "the pod spec with its containers")
    replicas = (doc.body.get("spec") or {}).get("replicas") if kind != "Pod" else None
    if replicas == 0:
        return f"{kind} {namespace}/{name} (replicas: 0, no pod runs)"
    if spec.get("hostNetwork") is True:
        return f"{kind} {namespace}/{name} (hostNetwork: NetworkPolicies do not apply to it)"
    labels = _labels(doc, meta.get("labels"), f"{prefix}.metadata.labels".lstrip("."))
    return PodSpec(namespace, name, labels, _container_ports(doc, spec, spec_path))


def _service(doc: _Document, override: str | None) -> ServiceSpec | str:
    name = _name(doc, "Service")
    namespace = _namespace(doc, override)
    spec = doc.body.get("spec")
    if not isinstance(spec, Mapping):
        raise doc.fail("spec", "required field is missing", "the Service's selector and ports")
    kind = spec.get("type", "ClusterIP")
    if kind == "ExternalName":
        return f"Service {namespace}/{name} (type ExternalName: no cluster IP)"
    if spec.get("clusterIP") == "None":
        return f"Service {namespace}/{name} (headless: no cluster IP; its pods are probed directly)"
    selector = _labels(doc, spec.get("selector"), "spec.selector")
    if not selector:
        return f"Service {namespace}/{name} (no selector: its endpoints are not managed by Kubernetes)"
    raw_ports = spec.get("ports")
    if not isinstance(raw_ports, list) or not raw_ports:
        raise doc.fail("spec.ports", "required field is missing", "at least one port")
    ports: list[ServicePort] = []
    seen: set[PortProtocol] = set()
    for i, entry in enumerate(raw_ports):
        path = f"spec.ports[{i}]"
        if not isinstance(entry, Mapping):
            raise doc.fail(path, "not a mapping", "a Service port {port: 80, targetPort: http}")
        number = entry.get("port")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            raise doc.fail(f"{path}.port", f"got {number!r}", "a port number 1-65535")
        protocol = _protocol(doc, entry.get("protocol", "TCP"), f"{path}.protocol")
        target = entry.get("targetPort", number)
        if isinstance(target, str):
            problem = check_port_name(target)
            if problem:
                raise doc.fail(f"{path}.targetPort", problem, "a port number or " + PORT_NAME_FORM)
        elif isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= 65535:
            raise doc.fail(f"{path}.targetPort", f"got {target!r}", "a port number 1-65535 or a container port name")
        port_name = entry.get("name")
        if port_name is None and len(raw_ports) > 1:
            raise doc.fail(f"{path}.name", "required field is missing", "a name for each port of a Service with several")
        if port_name is not None and not is_dns_label(port_name):
            raise doc.fail(f"{path}.name", f"{port_name!r} is not a valid Service port name", "a lowercase DNS label")
        key = PortProtocol(number, protocol)
        if key in seen:
            raise doc.fail(path, f"{key} is declared twice")
        seen.add(key)
        ports.append(ServicePort(number, protocol, target, port_name))
    return ServiceSpec(namespace, name, selector, tuple(ports))


def _collect(documents: Sequence[tuple[_Document, str | None]], files: tuple[str, ...]) -> WorkloadSet:
    namespaces: dict[str, NamespaceSpec] = {}
    pods: dict[str, tuple[PodSpec, _Document]] = {}
    services: dict[str, tuple[ServiceSpec, _Document]] = {}
    ignored: list[str] = []
    used: list[str] = []  # namespaces in order of first use
    for doc, override in documents:
        kind, group = _kind_of(doc)
        if kind == "Namespace" and group == "":
            name = _name(doc, "Namespace")
            namespaces[name] = NamespaceSpec(name, _labels(doc, _metadata(doc).get("labels"), "metadata.labels"))
            continue
        if kind == "Service" and group == "":
            service = _service(doc, override)
            if isinstance(service, str):
                ignored.append(service)
                continue
            if service.id in services:
                other = services[service.id][1]
                raise doc.fail("metadata.name", f"Service {service.id} is also declared in {other.source} ({other.where('')})")
            services[service.id] = (service, doc)
            used.append(service.namespace)
            continue
        if kind in _WORKLOADS and group in _WORKLOADS[kind][0]:
            pod = _pod(doc, kind, override)
            if isinstance(pod, str):
                ignored.append(pod)
                continue
            if pod.id in pods:
                other = pods[pod.id][1]
                raise doc.fail(
                    "metadata.name",
                    f"a probe pod {pod.id} already stands for a workload of {other.source} ({other.where('') or 'its document'})",
                    "one workload per name and namespace",
                )
            pods[pod.id] = (pod, doc)
            used.append(pod.namespace)
            continue
        meta = doc.body.get("metadata")
        name = meta.get("name", "?") if isinstance(meta, Mapping) else "?"
        ignored.append(f"{kind} {name}")
    for name in used:
        namespaces.setdefault(name, NamespaceSpec(name))
    return WorkloadSet(
        tuple(namespaces.values()),
        tuple(p for p, _ in pods.values()),
        tuple(s for s, _ in services.values()),
        tuple(ignored),
        files,
    )


def merge_workloads(
    workloads: WorkloadSet,
    namespaces: Sequence[NamespaceSpec],
    labelled: set[str],
    pods: Sequence[PodSpec],
    services: Sequence[ServiceSpec],
) -> tuple[list[NamespaceSpec], list[PodSpec], list[ServiceSpec]]:
    """The manifests' topology with the hand-declared parts merged in: a namespace
    declared with ``labels`` takes those labels (one declared without keeps the
    manifest's), and a pod or Service of the same name replaces the manifest's."""
    merged_ns = {ns.name: ns for ns in workloads.namespaces}
    for ns in namespaces:
        if ns.name not in merged_ns or ns.name in labelled:
            merged_ns[ns.name] = ns
    merged_pods = {p.id: p for p in workloads.pods}
    merged_pods.update((p.id, p) for p in pods)
    merged_services = {s.id: s for s in workloads.services}
    merged_services.update((s.id, s) for s in services)
    return list(merged_ns.values()), list(merged_pods.values()), list(merged_services.values())


__all__ = ["WorkloadSet", "merge_workloads", "read_manifests", "read_workloads"]
