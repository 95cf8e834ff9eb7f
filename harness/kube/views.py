"""Small typed views of the Kubernetes objects the harness reads, made from the API
server's JSON at the client boundary.

Each view keeps only the fields the harness uses. A field the API leaves out is its
default (Kubernetes omits empty fields); a field of the wrong type means the reply is
not the object it claims to be, and :class:`ReplyShapeError` says where. Parsing is
explicit: no KeyError or TypeError is caught here, so a bug in the harness is never
mistaken for a bad reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class ReplyShapeError(Exception):
    """The reply does not have the shape of the expected object; ``where`` is the
    path of the field (``items[2].metadata.name``)."""

    def __init__(self, where: str, expected: str) -> None:
        self.where = where
        self.expected = expected
        super().__init__(f"{where} is not {expected}")


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ReplyShapeError(where, "an object")
    return value


def _optional_object(value: object, where: str) -> Mapping[str, object]:
    return {} if value is None else _object(value, where)


def _list(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReplyShapeError(where, "a list")
    return value


def _string(value: object, where: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ReplyShapeError(where, "a string")
    return value


def _required_string(value: object, where: str) -> str:
    text = _string(value, where)
    if not text:
        raise ReplyShapeError(where, "a non-empty string")
    return text


def _integer(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReplyShapeError(where, "an integer")
    return value


def _boolean(value: object, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ReplyShapeError(where, "a boolean")
    return value


def _string_map(value: object, where: str) -> Mapping[str, str]:
    raw = _optional_object(value, where)
    return MappingProxyType({key: _string(item, f"{where}.{key}") for key, item in raw.items()})


def items_of(listing: object, where: str = "the list") -> list[object]:
    """The ``items`` of a ``…List`` reply."""
    return _list(_object(listing, where).get("items"), f"{where}.items")


# -- shared parts -----------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One entry of ``status.conditions``."""

    type: str
    status: str
    reason: str = ""
    message: str = ""
    observed_generation: int | None = None

    @property
    def true(self) -> bool:
        return self.status == "True"


def conditions_of(value: object, where: str) -> tuple[Condition, ...]:
    found = []
    for i, raw in enumerate(_list(value, where)):
        entry = _object(raw, f"{where}[{i}]")
        found.append(
            Condition(
                type=_required_string(entry.get("type"), f"{where}[{i}].type"),
                status=_string(entry.get("status"), f"{where}[{i}].status", "Unknown"),
                reason=_string(entry.get("reason"), f"{where}[{i}].reason"),
                message=_string(entry.get("message"), f"{where}[{i}].message"),
                observed_generation=_integer(entry.get("observedGeneration"), f"{where}[{i}].observedGeneration"),
            )
        )
    return tuple(found)


def condition(conditions: tuple[Condition, ...], kind: str) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    deletion_timestamp: str | None = None
    generation: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "annotations", MappingProxyType(dict(self.annotations)))


def meta_of(obj: Mapping[str, object], where: str) -> ObjectMeta:
    raw = _object(obj.get("metadata"), f"{where}.metadata")
    deletion = raw.get("deletionTimestamp")
    return ObjectMeta(
        name=_required_string(raw.get("name"), f"{where}.metadata.name"),
        namespace=_string(raw.get("namespace"), f"{where}.metadata.namespace"),
        labels=_string_map(raw.get("labels"), f"{where}.metadata.labels"),
        annotations=_string_map(raw.get("annotations"), f"{where}.metadata.annotations"),
        deletion_timestamp=_string(deletion, f"{where}.metadata.deletionTimestamp") if deletion is not None else None,
        generation=_integer(raw.get("generation"), f"{where}.metadata.generation"),
    )


# -- namespaces and nodes -------------------------------------------------------------


@dataclass(frozen=True)
class NamespaceView:
    meta: ObjectMeta

    @property
    def name(self) -> str:
        return self.meta.name


def namespace_view(raw: object, where: str = "the Namespace") -> NamespaceView:
    return NamespaceView(meta_of(_object(raw, where), where))


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str


@dataclass(frozen=True)
class NodeView:
    meta: ObjectMeta
    unschedulable: bool = False
    taints: tuple[Taint, ...] = ()
    conditions: tuple[Condition, ...] = ()

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def ready(self) -> bool:
        ready = condition(self.conditions, "Ready")
        return ready is not None and ready.true

    @property
    def linux(self) -> bool:
        return self.meta.labels.get("kubernetes.io/os", "linux") == "linux"


def node_view(raw: object, where: str = "the Node") -> NodeView:
    obj = _object(raw, where)
    spec = _optional_object(obj.get("spec"), f"{where}.spec")
    status = _optional_object(obj.get("status"), f"{where}.status")
    taints = []
    for i, item in enumerate(_list(spec.get("taints"), f"{where}.spec.taints")):
        taint = _object(item, f"{where}.spec.taints[{i}]")
        taints.append(
            Taint(
                _string(taint.get("key"), f"{where}.spec.taints[{i}].key"),
                _string(taint.get("effect"), f"{where}.spec.taints[{i}].effect"),
            )
        )
    return NodeView(
        meta=meta_of(obj, where),
        unschedulable=_boolean(spec.get("unschedulable"), f"{where}.spec.unschedulable"),
        taints=tuple(taints),
        conditions=conditions_of(status.get("conditions"), f"{where}.status.conditions"),
    )


def ready_nodes(nodes: list[NodeView]) -> tuple[int, int]:
    """(nodes Ready, nodes)."""
    return sum(1 for n in nodes if n.ready), len(nodes)


# -- pods ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerStatusView:
    name: str
    ready: bool = False
    waiting_reason: str = ""
    waiting_message: str = ""
    last_exit_code: int | None = None
    last_message: str = ""


def _container_status(raw: object, where: str) -> ContainerStatusView:
    obj = _object(raw, where)
    state = _optional_object(obj.get("state"), f"{where}.state")
    waiting = _optional_object(state.get("waiting"), f"{where}.state.waiting")
    last = _optional_object(_optional_object(obj.get("lastState"), f"{where}.lastState").get("terminated"), f"{where}.lastState")
    return ContainerStatusView(
        name=_string(obj.get("name"), f"{where}.name"),
        ready=_boolean(obj.get("ready"), f"{where}.ready"),
        waiting_reason=_string(waiting.get("reason"), f"{where}.state.waiting.reason"),
        waiting_message=_string(waiting.get("message"), f"{where}.state.waiting.message"),
        last_exit_code=_integer(last.get("exitCode"), f"{where}.lastState.terminated.exitCode"),
        last_message=_string(last.get("message"), f"{where}.lastState.terminated.message"),
    )


@dataclass(frozen=True)
class PodView:
    meta: ObjectMeta
    phase: str = ""
    pod_ip: str = ""
    reason: str = ""
    message: str = ""
    conditions: tuple[Condition, ...] = ()
    containers: tuple[ContainerStatusView, ...] = ()

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def ready(self) -> bool:
        ready = condition(self.conditions, "Ready")
        return self.phase == "Running" and bool(self.pod_ip) and ready is not None and ready.true

    def describe(self) -> str:
        """Phase, the conditions that are not met and the containers' waiting reasons."""
        parts = [self.phase or "?"]
        parts += [f"{c.type}: {c.reason} {c.message}".strip() for c in self.conditions if not c.true and c.reason]
        parts += [f"{c.waiting_reason}: {c.waiting_message}".strip() for c in self.containers if c.waiting_reason]
        return "; ".join(parts)


def pod_view(raw: object, where: str = "the Pod") -> PodView:
    obj = _object(raw, where)
    status = _optional_object(obj.get("status"), f"{where}.status")
    containers = _list(status.get("containerStatuses"), f"{where}.status.containerStatuses")
    return PodView(
        meta=meta_of(obj, where),
        phase=_string(status.get("phase"), f"{where}.status.phase"),
        pod_ip=_string(status.get("podIP"), f"{where}.status.podIP"),
        reason=_string(status.get("reason"), f"{where}.status.reason"),
        message=_string(status.get("message"), f"{where}.status.message"),
        conditions=conditions_of(status.get("conditions"), f"{where}.status.conditions"),
        containers=tuple(_container_status(c, f"{where}.status.containerStatuses[{i}]") for i, c in enumerate(containers)),
    )


# -- workloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonSetView:
    meta: ObjectMeta
    images: tuple[str, ...] = ()


def daemonset_view(raw: object, where: str = "the DaemonSet") -> DaemonSetView:
    obj = _object(raw, where)
    template = _optional_object(_optional_object(obj.get("spec"), f"{where}.spec").get("template"), f"{where}.spec.template")
    containers = _list(_optional_object(template.get("spec"), f"{where}.spec.template.spec").get("containers"), where)
    images = tuple(
        _string(_object(c, f"{where}.spec.template.spec.containers[{i}]").get("image"), f"{where}.containers[{i}].image")
        for i, c in enumerate(containers)
    )
    return DaemonSetView(meta_of(obj, where), images)


# -- the Tigera operator ----------------------------------------------------------------------
# Shapes from tigera/operator api/v1/tigerastatus_types.go and installation_types.go:
# TigeraStatus.status.conditions has types Available, Progressing and Degraded with
# status True/False/Unknown; Installation.status.calicoVersion is written by the core
# controller (pkg/controller/installation/core_controller.go) only once the status
# manager reports the installation available, together with status.variant.


@dataclass(frozen=True)
class TigeraStatusView:
    name: str
    conditions: tuple[Condition, ...] = ()

    def _is(self, kind: str) -> bool:
        found = condition(self.conditions, kind)
        return found is not None and found.true

    @property
    def available(self) -> bool:
        return self._is("Available")

    @property
    def progressing(self) -> bool:
        return self._is("Progressing")

    @property
    def degraded(self) -> bool:
        return self._is("Degraded")

    @property
    def settled(self) -> bool:
        """Available, and neither Progressing nor Degraded: the operator's status
        code leaves Available true while an upgrade may still be under way."""
        return self.available and not self.progressing and not self.degraded

    def describe(self) -> str:
        states = [
            k for k, on in (("Available", self.available), ("Progressing", self.progressing), ("Degraded", self.degraded)) if on
        ]
        text = f"{self.name}: {'/'.join(states) or 'not Available'}"
        messages = sorted({c.message for c in self.conditions if c.message and c.message != "All objects available"})
        return f"{text} ({'; '.join(messages)})" if messages and not self.settled else text


def tigera_status_view(raw: object, where: str = "the TigeraStatus") -> TigeraStatusView:
    obj = _object(raw, where)
    status = _optional_object(obj.get("status"), f"{where}.status")
    return TigeraStatusView(meta_of(obj, where).name, conditions_of(status.get("conditions"), f"{where}.status.conditions"))


@dataclass(frozen=True)
class InstallationView:
    name: str
    calico_version: str = ""
    variant: str = ""
    conditions: tuple[Condition, ...] = ()


def installation_view(raw: object, where: str = "the Installation") -> InstallationView:
    obj = _object(raw, where)
    status = _optional_object(obj.get("status"), f"{where}.status")
    return InstallationView(
        name=meta_of(obj, where).name,
        calico_version=_string(status.get("calicoVersion"), f"{where}.status.calicoVersion"),
        variant=_string(status.get("variant"), f"{where}.status.variant"),
        conditions=conditions_of(status.get("conditions"), f"{where}.status.conditions"),
    )


def server_version_of(raw: object, where: str = "the version reply") -> str:
    """``gitVersion`` of ``GET /version``."""
    return _required_string(_object(raw, where).get("gitVersion"), f"{where}.gitVersion")


def name_of(raw: object, where: str) -> str:
    """``metadata.name`` of an object the API server returned."""
    return meta_of(_object(raw, where), where).name


# -- custom objects and API discovery ---------------------------------------------------


def object_meta_view(raw: object, where: str = "the object") -> ObjectMeta:
    """The metadata of any object (a custom resource the harness applied)."""
    return meta_of(_object(raw, where), where)


def served_resources_of(raw: object, where: str = "the APIResourceList") -> frozenset[str]:
    """The resources an API group version serves (``GET /apis/<group>/<version>``),
    by plural name, subresources (``kubecontrollersconfigurations/status``) left out."""
    resources = _list(_object(raw, where).get("resources"), f"{where}.resources")
    names = (
        _required_string(_object(r, f"{where}.resources[{i}]").get("name"), f"{where}.resources[{i}].name")
        for i, r in enumerate(resources)
    )
    return frozenset(name for name in names if "/" not in name)


@dataclass(frozen=True)
class FelixConfigurationView:
    """What the harness reads of a FelixConfiguration: how Felix denies a packet in
    each of its dataplanes (``""``: the default, Drop)."""

    meta: ObjectMeta
    iptables_deny_action: str = ""
    nftables_deny_action: str = ""


def felix_configuration_view(raw: object, where: str = "the FelixConfiguration") -> FelixConfigurationView:
    obj = _object(raw, where)
    spec = _optional_object(obj.get("spec"), f"{where}.spec")
    return FelixConfigurationView(
        meta_of(obj, where),
        _string(spec.get("iptablesFilterDenyAction"), f"{where}.spec.iptablesFilterDenyAction"),
        _string(spec.get("nftablesFilterDenyAction"), f"{where}.spec.nftablesFilterDenyAction"),
    )


# -- Services -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceView:
    meta: ObjectMeta
    #: ``spec.clusterIP``: set by the API server on create ("None" for a headless one).
    cluster_ip: str = ""


def service_view(raw: object, where: str = "the Service") -> ServiceView:
    obj = _object(raw, where)
    spec = _optional_object(obj.get("spec"), f"{where}.spec")
    return ServiceView(meta_of(obj, where), _string(spec.get("clusterIP"), f"{where}.spec.clusterIP"))


@dataclass(frozen=True)
class SlicePort:
    name: str
    protocol: str
    port: int | None


@dataclass(frozen=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    #: ``conditions.ready``: absent means ready (discovery.k8s.io/v1 EndpointConditions).
    ready: bool = True


@dataclass(frozen=True)
class EndpointSliceView:
    meta: ObjectMeta
    address_type: str = "IPv4"
    ports: tuple[SlicePort, ...] = ()
    endpoints: tuple[SliceEndpoint, ...] = ()


def endpoint_slice_view(raw: object, where: str = "the EndpointSlice") -> EndpointSliceView:
    obj = _object(raw, where)
    ports = []
    for i, item in enumerate(_list(obj.get("ports"), f"{where}.ports")):
        entry = _object(item, f"{where}.ports[{i}]")
        ports.append(
            SlicePort(
                _string(entry.get("name"), f"{where}.ports[{i}].name"),
                _string(entry.get("protocol"), f"{where}.ports[{i}].protocol", "TCP"),
                _integer(entry.get("port"), f"{where}.ports[{i}].port"),
            )
        )
    endpoints = []
    for i, item in enumerate(_list(obj.get("endpoints"), f"{where}.endpoints")):
        entry = _object(item, f"{where}.endpoints[{i}]")
        conditions = _optional_object(entry.get("conditions"), f"{where}.endpoints[{i}].conditions")
        ready = conditions.get("ready")
        addresses = tuple(
            _string(a, f"{where}.endpoints[{i}].addresses[{j}]")
            for j, a in enumerate(_list(entry.get("addresses"), f"{where}.endpoints[{i}].addresses"))
        )
        endpoints.append(
            SliceEndpoint(addresses, True if ready is None else _boolean(ready, f"{where}.endpoints[{i}].conditions.ready"))
        )
    return EndpointSliceView(
        meta_of(obj, where),
        _string(obj.get("addressType"), f"{where}.addressType", "IPv4"),
        tuple(ports),
        tuple(endpoints),
    )
