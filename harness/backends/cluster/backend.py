"""What the ``kind`` and ``existing`` backends share: a topology turned into
namespaces and pods on a Kubernetes cluster, policies applied with server-side
apply (NetworkPolicies here; the cluster-scoped admin policies and Calico's kinds
through :mod:`harness.backends.cluster.objects`, once
:mod:`harness.backends.cluster.enforcement` has found that the cluster's CNI
enforces them), labels changed through the API, and probe rounds run with one exec
per source pod.

Pods are reused while the topology keeps its shape (same namespaces, pods and
ports): between scenarios only policies are removed and labels restored.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from functools import partial

from harness.backends.base import Backend, Capabilities, Deployment
from harness.backends.cluster.enforcement import PolicySupport, SupportCheck, unknown_support
from harness.backends.cluster.objects import ClusterObjects, PlacedObject
from harness.backends.cluster.services import ClusterServices, ServiceTarget, combine
from harness.core.cluster_policy import ClusterPolicy
from harness.core.errors import BackendError, BackendUnavailable, HarnessError, UnsupportedPolicy
from harness.core.matrix import Cell, CellSet, Observation, Outcome, ReachabilityMatrix
from harness.core.policy import NetworkPolicy
from harness.core.progress import Progress
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState
from harness.core.topology import ExternalHost, PodSpec, Protocol, Topology
from harness.kube.api import ExecRequest, ExecResult, KubeApi
from harness.kube.environment import ProbeEnvironment, environment_command, parse_environment
from harness.kube.manifests import (
    ANNOTATION_RUN,
    CHECK_POD,
    CONTAINER,
    check_pod_manifest,
    namespace_manifest,
    pod_manifest,
    schedulable_nodes,
    spread_over_nodes,
)
from harness.kube.naming import NamespaceMap, ReservedLabel, scope_label_use
from harness.kube.probe_script import (
    ProbeTarget,
    kubectl_line,
    observation,
    parse_output,
    reproduce_command,
    round_timeout,
    script_command,
)
from harness.kube.views import PodView
from harness.kube.waiting import wait_until

log = logging.getLogger("harness.kube")

#: Source pods probed at once (one exec each).
MAX_CONCURRENT_EXECS = 6
#: Waiting reasons of a container that will not fix themselves.
_IMAGE_FAILURES = {"ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
_CONTAINER_FAILURES = {"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def new_run_id() -> str:
    return uuid.uuid4().hex[:6]


class ClusterBackend(Backend):
    """A Backend on a Kubernetes API server. Subclasses decide where the cluster
    comes from, how namespaces are named and whether external hosts exist."""

    capabilities = Capabilities(deterministic=False, protocols=frozenset(Protocol))

    #: Felix denies with REJECT on this cluster (the kind backend's --deny-action
    #: reject): a refused probe is a blocked one.
    rejects = False
    #: Seconds allowed for the pods of a topology to become Ready.
    pods_ready_timeout = 300.0
    #: Seconds allowed for deleted namespaces to disappear.
    namespace_gone_timeout = 180.0
    poll = 2.0

    def __init__(
        self,
        kube: KubeApi,
        names: NamespaceMap,
        image: str,
        progress: Progress,
        *,
        adopt_existing_namespaces: bool,
        run_id: str | None = None,
    ) -> None:
        self.kube = kube
        self.names = names
        self.image = image
        self.progress = progress
        self.run_id = run_id or new_run_id()
        if names.scope is None:
            names.scope = self.run_id  # every namespace of the run carries it (harness.kube.naming)
        elif names.scope != self.run_id:
            raise ValueError(f"the namespace map scopes run {names.scope}, not this run, {self.run_id}")
        self.adopt_existing_namespaces = adopt_existing_namespaces
        self._topology: Topology | None = None
        self._addresses: dict[str, ipaddress.IPv4Address] = {}
        self._created: list[str] = []  # real namespaces this backend created
        self._adopted: dict[str, dict[str, str]] = {}  # real namespace → labels it had before
        self._pods_in_adopted: list[tuple[str, str]] = []
        self._applied: set[tuple[str, str]] = set()
        self._converged: DesiredState | None = None  # what the cluster was last brought to
        self._timeout = 1.0
        #: What the probe image and the nodes' kernel offer, checked once per backend.
        self._environment: ProbeEnvironment | None = None
        self._closed = False
        #: The scenario's Services on the cluster (harness.backends.cluster.services).
        self.services = ClusterServices(kube, names, self.run_id, progress, self.poll)
        #: Cluster-scoped admin policies and Calico's kinds (harness.backends.cluster.objects).
        self.objects = ClusterObjects(kube, names, self.run_id, progress, self.name)
        self._support: SupportCheck | None = None

    # -- what subclasses provide ------------------------------------------------------

    @property
    def serves_externals(self) -> bool:
        return False

    def start_externals(self, externals: Sequence[ExternalHost]) -> None:
        """Serve these external hosts (kind only)."""

    def stop_externals(self) -> None:
        """Remove the external hosts."""

    def kubectl_target(self) -> tuple[str | None, str | None]:
        """(kubeconfig, context) for the reproduce commands."""
        return self.kube.kubeconfig, self.kube.context

    def policy_support(self) -> PolicySupport:
        """What the cluster's CNI enforces beyond NetworkPolicy (see
        harness.backends.cluster.enforcement); asked once, when a state first has
        such a policy."""
        return unknown_support("an unknown CNI", f"backend {self.name} does not say which CNI the cluster runs")

    @property
    def support(self) -> SupportCheck:
        if self._support is None:
            support = self.policy_support()
            self.progress(f"policies beyond NetworkPolicy: {support.basis}")
            self._support = SupportCheck(self.name, support, self.kube.crd_exists, self.kube.served_resources)
        return self._support

    # -- deploy -----------------------------------------------------------------------

    def deploy(self, topology: Topology, settings: ImplementationSettings) -> Deployment:
        """Create the topology's namespaces and pods, or keep them when the shape is
        the one deployed: then the state in force stays what it was, and the next
        :meth:`converge` sends only what differs. ``settings`` describe the CNI's
        own behaviour, which a real cluster does not take from a scenario."""
        if self._topology is not None and topology.shape() == self._topology.shape():
            self._topology = topology
            self.services.sync(topology, self._addresses)  # Services are not part of the shape
            return Deployment(topology, self._addresses)
        self._teardown(wait=True)
        # Set only once everything runs: after a failed deploy, nothing is converged
        # and the next deploy or close() removes what was made (tracked in _created).
        self._create(topology)
        self.services.sync(topology, self._addresses)
        self._topology = topology
        self._converged = DesiredState(topology)
        return Deployment(topology, self._addresses)

    def _create(self, topology: Topology) -> None:
        self._clear_leftovers(topology)
        for ns in topology.namespaces:
            real = self.names.real(ns.name)
            labels = self.names.namespace_labels(ns.labels)
            existing = self.kube.read_namespace(real)
            if existing is None:
                self.kube.create_namespace(namespace_manifest(real, labels, self.run_id, ns.name))
                self._created.append(real)
            elif self.adopt_existing_namespaces:
                # default...: used as it is, and given back as it was.
                self._adopted.setdefault(real, self.names.labels_to_give_back(existing.meta.labels))
                self.kube.set_namespace_labels(real, labels)
            else:
                raise BackendError(f"namespace {real} already exists on the cluster and was not created by this run")
        nodes = schedulable_nodes(self.kube.nodes())
        placement = spread_over_nodes(topology.pods, nodes)
        first = topology.pods[0] if topology.pods else None
        environment = self._check_environment(self.names.real(first.namespace), nodes[0] if nodes else None) if first else None
        serve_sctp = environment.sctp if environment is not None else True
        self.progress(
            f"creating {len(topology.pods)} pod(s) in {len(topology.namespaces)} namespace(s) on {len(nodes) or 'any'} node(s)"
        )
        for pod in topology.pods:
            real = self.names.real(pod.namespace)
            manifest = pod_manifest(pod, real, self.image, self.run_id, placement[pod.id], serve_sctp=serve_sctp)
            self.kube.create_pod(manifest)
            if real in self._adopted:
                self._pods_in_adopted.append((real, pod.name))
        self._wait_for_pods(topology.pods)
        if topology.externals and self.serves_externals:
            self.start_externals(topology.externals)
            for ext in topology.externals:
                self._addresses[ext.id] = ext.ip

    def _clear_leftovers(self, topology: Topology) -> None:
        """What an earlier, interrupted run left on a kept cluster goes first: its
        namespaces, and its pods in namespaces it did not create (kube-system...)."""
        stale: list[str] = []
        stale_pods: list[tuple[str, str]] = []
        wanted = {(self.names.real(p.namespace), p.name) for p in topology.pods}
        for ns in topology.namespaces:
            real = self.names.real(ns.name)
            existing = self.kube.read_namespace(real)
            if existing is None:
                continue
            if ANNOTATION_RUN in existing.meta.annotations:
                self.progress(f"removing namespace {real}, left over by an earlier run")
                self.kube.delete_namespace(real)
                stale.append(real)
            elif self.adopt_existing_namespaces:
                for pod in self.kube.list_pods(real):
                    left = (real, pod.name) in wanted or pod.name == CHECK_POD
                    if left and ANNOTATION_RUN in pod.meta.annotations:
                        self.progress(f"removing pod {real}/{pod.name}, left over by an earlier run")
                        self.kube.delete_pod(real, pod.name)
                        stale_pods.append((real, pod.name))
        self._wait_namespaces_gone(stale)
        self._wait_pods_gone(stale_pods)

    def _wait_namespaces_gone(self, names: Sequence[str]) -> None:
        if not names:
            return

        def gone() -> tuple[bool, str]:
            left = [n for n in names if self.kube.read_namespace(n) is not None]
            return not left, f"still terminating: {', '.join(left)}"

        wait_until(
            gone,
            limit=self.namespace_gone_timeout,
            poll=self.poll,
            progress=self.progress,
            message=f"waiting for {len(names)} namespace(s) to be deleted",
        )

    def _wait_for_pods(self, pods: Sequence[PodSpec], what: str = "") -> None:
        expected = {(self.names.real(p.namespace), p.name): p for p in pods}
        namespaces = sorted({ns for ns, _ in expected})
        snapshot: dict[tuple[str, str], PodView] = {}

        def ready() -> tuple[bool, str]:
            snapshot.clear()
            for ns in namespaces:
                for pod in self.kube.list_pods(ns):
                    key = (ns, pod.name)
                    if key in expected:
                        snapshot[key] = pod
            for key, pod in snapshot.items():
                self._raise_if_failed(key, pod)
            waiting = [f"{ns}/{name}" for (ns, name) in expected if not _is_ready(snapshot.get((ns, name)))]
            return not waiting, f"{len(expected) - len(waiting)}/{len(expected)} Ready, waiting for {', '.join(waiting[:5])}" + (
                " ..." if len(waiting) > 5 else ""
            )

        def diagnostics() -> str:
            return "\n".join(f"  {ns}/{name}: {_pod_state(snapshot.get((ns, name)))}" for ns, name in expected)

        wait_until(
            ready,
            limit=self.pods_ready_timeout,
            poll=self.poll,
            progress=self.progress,
            message=f"waiting for {what or f'{len(expected)} pod(s)'} to be Ready",
            diagnostics=diagnostics,
        )
        for key, spec in expected.items():
            address = snapshot[key].pod_ip
            try:
                self._addresses[spec.id] = ipaddress.IPv4Address(address)
            except ValueError:
                raise BackendError(f"pod {key[0]}/{key[1]} has no IPv4 address ({address!r})") from None

    def _raise_if_failed(self, key: tuple[str, str], pod: PodView) -> None:
        where = f"pod {key[0]}/{key[1]}"
        if pod.phase == "Failed":
            hint = (
                (
                    " (the kubelet does not allow the sysctl net.ipv4.ip_unprivileged_port_start, which pods with "
                    "ports below 1024 need)"
                )
                if pod.reason == "SysctlForbidden"
                else ""
            )
            raise BackendError(f"{where} failed: {pod.reason} {pod.message}{hint}".strip())
        for cs in pod.containers:
            if cs.waiting_reason in _IMAGE_FAILURES:
                raise BackendUnavailable(
                    f"{where}: the cluster cannot pull {self.image} ({cs.waiting_reason}: {cs.waiting_message}). "
                    "Make the image reachable from the nodes (a mirror, or preload it on the nodes)"
                )
            if cs.waiting_reason in _CONTAINER_FAILURES:
                code = cs.last_exit_code if cs.last_exit_code is not None else "?"
                raise BackendError(
                    f"{where}: {cs.waiting_reason}: {cs.waiting_message or cs.last_message} (last exit code {code})"
                )

    def _check_environment(self, namespace: str, node: str | None) -> ProbeEnvironment:
        """Once per backend, before the first probe pods: a pod of the probe image
        (serving nothing, so it starts on any kernel) tells whether exec is allowed,
        whether the image has the probe clients, and whether the nodes' kernel has
        SCTP. Pods then serve SCTP only where it exists (agnhost porter exits when it
        cannot listen on an SCTP port), and SCTP cells are unsupported, with the
        reason, where it does not."""
        if self._environment is not None:
            return self._environment
        self.progress(f"checking the probe image and the nodes' kernel (pod {namespace}/{CHECK_POD})")
        self.kube.create_pod(check_pod_manifest(namespace, self.image, self.run_id, node))
        check = PodSpec(self.names.scenario(namespace) or namespace, CHECK_POD, {})
        try:
            self._wait_for_pods((check,), f"the environment check pod {namespace}/{CHECK_POD}")
            result = self.kube.exec(ExecRequest(namespace, CHECK_POD, CONTAINER, tuple(environment_command()), 60))
        finally:
            self.kube.delete_pod(namespace, CHECK_POD)
            self._addresses.pop(check.id, None)
        if result.exit_code is None:
            why = result.error or result.stderr.strip() or "no reason given"
            hint = "; probing runs commands in the pods, which needs the pods/exec permission" if "answered 403" in why else ""
            raise BackendError(f"cannot run commands in pod {namespace}/{CHECK_POD}: {why}{hint}")
        environment = parse_environment(result.stdout)
        if environment.missing:
            raise BackendUnavailable(
                f"the probe image {self.image} lacks {', '.join(environment.missing)}, which the probes run; "
                "use the agnhost image pinned in clusters/versions.env"
            )
        self.progress(environment.describe())
        self._environment = environment
        return environment

    # -- the state in force -------------------------------------------------------------

    def converge(self, state: DesiredState) -> None:
        """Send what differs from the last state converged to, in the documented
        order: deletes, server-side applies of new or changed policies, then label
        patches of the namespaces and pods whose labels differ."""
        if self._topology is None or self._converged is None:
            raise BackendError("nothing is deployed on the cluster: call deploy(topology) first")
        if state.topology.shape() != self._topology.shape():
            raise BackendError("the cluster has another topology deployed: call deploy() with this one first")
        # Everything is checked before anything changes: a policy the CNI would not
        # enforce is refused (harness.backends.cluster.enforcement), never skipped.
        for ns in state.topology.namespaces:
            self.names.namespace_labels(ns.labels)  # a label the harness keeps for itself: refused here
        objects = self.objects.render(state)
        self._refuse_unenforced(state, objects)
        self.objects.refuse_takeovers(objects, self._created)
        before = self._converged
        for ref in before.policies:
            if ref not in state.policies:
                self._delete_policy(ref)
        self.objects.delete_gone(objects)
        for ref, policy in state.policies.items():
            old = before.policies.get(ref)
            if old is None or dict(old.manifest) != dict(policy.manifest):
                self._apply_policy(policy)
        if objects:
            self.objects.apply_changed(objects, self.support.support)
        for ns in state.topology.namespaces:
            if dict(before.topology.namespace(ns.name).labels) != dict(ns.labels):
                self.kube.set_namespace_labels(self.names.real(ns.name), self.names.namespace_labels(ns.labels))
        for pod in state.topology.pods:
            if dict(before.topology.pod(pod.id).labels) != dict(pod.labels):
                self.kube.set_pod_labels(self.names.real(pod.namespace), pod.name, pod.labels)
        self._converged = state

    def _refuse_unenforced(self, state: DesiredState, objects: dict[str, PlacedObject]) -> None:
        """The first policy of ``state`` the cluster's CNI would not enforce, or that
        selects the harness's own scope label, raises UnsupportedPolicy."""
        for ref, policy in state.policies.items():
            used = scope_label_use(policy.manifest)
            if used is not None:
                err = ReservedLabel(used)
                raise UnsupportedPolicy(self.name, policy.source or "<inline>", ref, err.path, err.reason)
        for ref, placed in objects.items():
            declared = placed.declared
            if isinstance(declared, ClusterPolicy):
                self.support.cluster_policy(declared, placed.resource)
            elif declared is not None:
                self.support.calico_policy(ref, declared, placed.resource)

    def _apply_policy(self, policy: NetworkPolicy) -> None:
        manifest = self.names.translate_policy(policy.manifest)
        self.kube.apply_policy(manifest)
        self._applied.add((manifest["metadata"]["namespace"], manifest["metadata"]["name"]))

    def _delete_policy(self, ref: str) -> None:
        namespace, _, name = ref.partition("/")
        real = self.names.real(namespace)
        if not self.kube.delete_policy(real, name):
            log.info("NetworkPolicy %s/%s was not there to delete", real, name)
        self._applied.discard((real, name))

    # -- probing ------------------------------------------------------------------------

    def probe(self, cells: CellSet, timeout: float) -> ReachabilityMatrix:
        self._timeout = timeout
        topology = self._topology
        results: dict[Cell, Observation] = {}
        by_source: dict[str, list[Cell]] = {}
        to_services: dict[str, list[Cell]] = {}
        for cell in cells:
            if topology is not None and topology.service_destination(cell.destination) is not None:
                to_services.setdefault(cell.source, []).append(cell)
                continue
            destination = topology.endpoint(cell.destination) if topology and topology.has_endpoint(cell.destination) else None
            if isinstance(destination, ExternalHost) and not self.serves_externals:
                results[cell] = Observation(
                    Outcome.UNSUPPORTED, f"external hosts are served by the kind backend only, not by {self.name}"
                )
            elif cell.destination not in self._addresses or cell.source not in self._addresses:
                results[cell] = Observation(Outcome.ERROR, "not deployed: call deploy() with this topology first")
            else:
                by_source.setdefault(cell.source, []).append(cell)
        groups = list(by_source.values())
        for group in groups:
            results.update(self._unsupported(group))
        rounds = [[c for c in group if c not in results] for group in groups]
        rounds = [group for group in rounds if group]
        requests = [self._round_request(group, timeout) for group in rounds]
        for group, result in zip(rounds, self.kube.exec_many(requests, MAX_CONCURRENT_EXECS), strict=True):
            results.update(self._read_round(group, result, timeout))
        for group in to_services.values():
            results.update(self._probe_services(group, timeout))
        return ReachabilityMatrix.empty(cells.axes).with_cells(results)

    def _probe_services(self, cells: Sequence[Cell], timeout: float) -> dict[Cell, Observation]:
        """One exec in the source pod for its Service cells, each probed several
        times through the cluster IP or the name (harness.backends.cluster.services)."""
        assert self._topology is not None
        topology = self._converged.topology if self._converged is not None else self._topology
        source = self._topology.pod(cells[0].source)
        results: dict[Cell, Observation] = {}
        planned: list[tuple[Cell, ServiceTarget, list[int]]] = []
        targets: list[ProbeTarget] = []
        for cell in cells:
            target = self.services.target(cell, topology)
            if isinstance(target, Observation):
                results[cell] = target
                continue
            ids = list(range(len(targets), len(targets) + target.count))
            targets += [ProbeTarget(i, cell.port.protocol, target.address, target.port, target.by_name) for i in ids]
            planned.append((cell, target, ids))
        if not targets:
            return results
        request = ExecRequest(
            self.names.real(source.namespace),
            source.name,
            CONTAINER,
            tuple(script_command(targets, timeout)),
            round_timeout(targets, timeout),
        )
        result = self.kube.exec(request)
        lines, problems = parse_output(result.stdout)
        kubeconfig, context = self.kubectl_target()
        for cell, target, ids in planned:
            shown = reproduce_command(
                kubeconfig,
                context,
                self.names.real(source.namespace),
                source.name,
                CONTAINER,
                cell.port.protocol,
                target.address,
                target.port,
                self._timeout,
                target.by_name,
            )
            if result.error or problems:
                why = result.error or "; ".join(problems)
                results[cell] = Observation(Outcome.ERROR, f"exec in {source.id}: {why}", shown)
            else:
                results[cell] = combine(cell, target, [lines.get(i) for i in ids], shown, timeout, self.rejects)
        return results

    def _unsupported(self, cells: Sequence[Cell]) -> dict[Cell, Observation]:
        """SCTP cells on nodes whose kernel has no SCTP: unsupported, with the reason."""
        environment = self._environment
        if environment is None or environment.sctp:
            return {}
        return {
            c: Observation(Outcome.UNSUPPORTED, environment.sctp_reason, self.reproduce_command(c))
            for c in cells
            if c.port.protocol is Protocol.SCTP
        }

    def _targets(self, cells: Sequence[Cell]) -> list[ProbeTarget]:
        return [ProbeTarget(i, c.port.protocol, str(self._addresses[c.destination]), c.port.port) for i, c in enumerate(cells)]

    def _round_request(self, cells: Sequence[Cell], timeout: float) -> ExecRequest:
        assert self._topology is not None
        source = self._topology.pod(cells[0].source)
        targets = self._targets(cells)
        return ExecRequest(
            self.names.real(source.namespace),
            source.name,
            CONTAINER,
            tuple(script_command(targets, timeout)),
            round_timeout(targets, timeout),
        )

    def _read_round(self, cells: Sequence[Cell], result: ExecResult, timeout: float) -> dict[Cell, Observation]:
        source = cells[0].source
        lines, problems = parse_output(result.stdout)
        missing = "; ".join(
            part
            for part in (
                f"exec in {source}: {result.error}" if result.error else "",
                f"exit code {result.exit_code}" if result.exit_code not in (0, None) else "",
                result.stderr.strip()[-300:],
                *problems,
            )
            if part
        )
        return {
            cell: observation(
                lines.get(i), cell.port.protocol, cell.destination, timeout, self.reproduce_command(cell), missing, self.rejects
            )
            for i, cell in enumerate(cells)
        }

    def reproduce_command(self, cell: Cell) -> str:
        assert self._topology is not None
        source: PodSpec = self._topology.pod(cell.source)
        address = self._addresses.get(cell.destination)
        target = str(address) if address is not None else f"<address of {cell.destination}>"
        kubeconfig, context = self.kubectl_target()
        return reproduce_command(
            kubeconfig,
            context,
            self.names.real(source.namespace),
            source.name,
            CONTAINER,
            cell.port.protocol,
            target,
            cell.port.port,
            self._timeout,
        )

    # -- teardown -------------------------------------------------------------------------

    def _teardown(self, wait: bool) -> None:
        """Remove what this backend put on the cluster; with ``wait``, until the
        namespaces are gone (their names are about to be reused).

        One failed call does not stop the others. What could not be removed stays
        recorded, so a later teardown tries again, and the error lists it with the
        commands that remove it by hand."""
        problems: list[str] = []

        def done(action: Callable[[], object]) -> bool:
            try:
                action()
            except HarnessError as err:
                problems.append(str(err))
                return False
            return True

        done(self.stop_externals)
        problems += self.services.remove()
        problems += self.objects.remove(self._created)
        created = list(self._created)
        deleted = [real for real in created if done(partial(self.kube.delete_namespace, real))]
        self._created = [real for real in created if real not in deleted]
        removed_pods = [pod for pod in self._pods_in_adopted if done(partial(self.kube.delete_pod, *pod))]
        self._pods_in_adopted = [pod for pod in self._pods_in_adopted if pod not in removed_pods]
        # Policies in namespaces this backend created go with the namespace (now or on a later try).
        self._applied = {
            (real, name)
            for real, name in sorted(self._applied)
            if real not in created and not done(partial(self.kube.delete_policy, real, name))
        }
        self._adopted = {
            real: labels
            for real, labels in self._adopted.items()
            if not done(partial(self.kube.set_namespace_labels, real, labels))
        }
        self._addresses = {}
        self._topology = None
        self._converged = None
        if problems:
            raise BackendError(
                "cleanup was incomplete:\n" + "\n".join(f"  - {problem}" for problem in problems) + self._leftovers_text()
            )
        if wait:
            self._wait_namespaces_gone(deleted)
            self._wait_pods_gone(removed_pods)

    def _leftovers_text(self) -> str:
        """What a failed teardown left on the cluster, with a command per object."""
        kubeconfig, context = self.kubectl_target()
        lines: list[str] = []
        for real in self._created:
            lines.append(kubectl_line(kubeconfig, context, ["delete", "namespace", real]))
        for real, name in self._pods_in_adopted:
            lines.append(kubectl_line(kubeconfig, context, ["delete", "pod", "-n", real, name]))
        for real, name in sorted(self._applied):
            lines.append(kubectl_line(kubeconfig, context, ["delete", "networkpolicy", "-n", real, name]))
        for args in self.objects.leftover_args():
            lines.append(kubectl_line(kubeconfig, context, args))
        for real, name in sorted(self.services.made):
            if real not in self._created:
                lines.append(kubectl_line(kubeconfig, context, ["delete", "service", "-n", real, name]))
        for real, labels in self._adopted.items():
            patch = json.dumps([{"op": "add", "path": "/metadata/labels", "value": labels}], sort_keys=True)
            lines.append(kubectl_line(kubeconfig, context, ["patch", "namespace", real, "--type=json", "-p", patch]))
        if not lines:
            return ""
        return "\nleft on the cluster; remove it with:\n" + "\n".join(f"  {line}" for line in lines)

    def _wait_pods_gone(self, pods: Sequence[tuple[str, str]]) -> None:
        if not pods:
            return

        def gone() -> tuple[bool, str]:
            names = {(ns, p.name) for ns in {ns for ns, _ in pods} for p in self.kube.list_pods(ns)}
            left = [f"{ns}/{name}" for ns, name in pods if (ns, name) in names]
            return not left, f"still terminating: {', '.join(left)}"

        wait_until(
            gone,
            limit=self.namespace_gone_timeout,
            poll=self.poll,
            progress=self.progress,
            message=f"waiting for {len(pods)} pod(s) to be deleted",
        )

    def sweep_leftover_objects(self, prefixed: bool) -> list[str]:
        """Delete the cluster-scoped admin policies and Calico policies that runs killed
        outright left (see harness.backends.cluster.objects); what was deleted. Every
        one is tried; those that could not be deleted are listed in one error."""
        swept, failed = self.objects.sweep(prefixed=prefixed)
        if failed:
            kubeconfig, context = self.kubectl_target()
            raise BackendError(
                "could not delete every policy left by earlier runs:\n"
                + "\n".join(f"  - {problem}" for problem, _ in failed)
                + "\nremove them with:\n"
                + "\n".join(f"  {kubectl_line(kubeconfig, context, args)}" for _, args in failed)
            )
        return swept

    def close_namespaces(self) -> None:
        """Delete what this run created (without waiting), once."""
        if self._closed:
            return
        self._closed = True
        try:
            self._teardown(wait=False)
        finally:
            self.kube.close()


def _is_ready(pod: PodView | None) -> bool:
    return pod is not None and pod.ready


def _pod_state(pod: PodView | None) -> str:
    return "not created" if pod is None else pod.describe()
