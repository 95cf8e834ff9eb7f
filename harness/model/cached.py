"""The reference model of a desired state, built once however many parts of a run
ask for it (the plan, the model backend, explanations of wrong cells)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Mapping

from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState
from harness.model.reference import ReferenceModel

_RECENT = 8
_lock = threading.Lock()
_models: list[tuple[DesiredState, Mapping[str, ipaddress.IPv4Address], ImplementationSettings, ReferenceModel]] = []


def model_of(
    state: DesiredState, addresses: Mapping[str, ipaddress.IPv4Address], settings: ImplementationSettings
) -> ReferenceModel:
    """The :class:`ReferenceModel` of ``state``: the same object for the same state
    object (or an equal one), addresses and settings, among the last few asked for."""
    with _lock:
        for known_state, known_addresses, known_settings, model in _models:
            if (
                (known_state is state or known_state == state)
                and known_settings == settings
                and (known_addresses is addresses or known_addresses == addresses)
            ):
                return model
    model = ReferenceModel(state.topology, state.effective_policies, addresses, settings, state.cluster_policy_list)
    with _lock:
        _models.insert(0, (state, addresses, settings, model))
        del _models[_RECENT:]
    return model
