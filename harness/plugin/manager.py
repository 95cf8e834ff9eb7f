"""The backend of a pytest run: created on first use, closed at the end.

With several backend variants (one per ``--calico-version``), one variant is live
at a time: items are ordered by variant, and moving to the next one either
upgrades the cluster in place (``--calico-upgrade``) or replaces it."""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Any

import pytest

from harness.backends import DEFAULT_BACKEND, backend_module, unavailable_message
from harness.backends.base import Backend
from harness.backends.variants import DEFAULT_VARIANT, BackendVariant, VariantOptions, calico_variants
from harness.core.errors import BackendUnavailable, HarnessError
from harness.core.progress import Progress
from harness.engine.pipeline import Pipeline
from harness.engine.probing import ProbeSettings

log = logging.getLogger("harness")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class BackendManager:
    def __init__(self, config: pytest.Config, probe_settings: ProbeSettings, progress: Progress, loud: Progress) -> None:
        self.config = config
        self.probe_settings = probe_settings
        self.progress = progress
        #: Progress that is always shown: creating a cluster takes minutes.
        self.loud = loud
        self.name: str = config.getoption("netpol_backend") or config.getini("netpol_backend") or DEFAULT_BACKEND
        self.upgrade = bool(config.getoption("calico_upgrade", False))
        if self.name == "kind":
            kind = backend_module("kind")
            self.variants = calico_variants(config.getoption("calico_version", None), kind.cluster_name(config), not self.upgrade)
        else:
            self.variants = [DEFAULT_VARIANT]
        self._backend: Backend | None = None
        self._pipeline: Pipeline | None = None
        self._variant: BackendVariant | None = None
        self._sigterm_caught = False
        self._previous_sigterm: Any = signal.SIG_DFL

    @property
    def backend(self) -> Backend | None:
        return self._backend

    def get(self, variant: BackendVariant = DEFAULT_VARIANT) -> Pipeline:
        """The pipeline of ``variant``'s backend, created (or upgraded to) on first use."""
        if self._backend is not None and self._variant != variant:
            upgrade = getattr(self._backend, "upgrade_calico", None)
            if self.upgrade and upgrade is not None and self._variant is not None:
                version = variant.options["calico_version"][0]
                self.loud(f"upgrading Calico in place: {self._variant.label} → {variant.label}")
                started = time.monotonic()
                upgrade(version)
                self.config.hook.pytest_netpol_upgrade(
                    config=self.config, before=self._variant.label, after=variant.label, seconds=time.monotonic() - started
                )
                self._variant = variant
                # The cluster stays; what it last converged to is unchanged.
                assert self._pipeline is not None
                return self._pipeline
            self.close()
        if self._backend is None:
            options = self.config if variant == DEFAULT_VARIANT else VariantOptions(self.config, variant)
            self._catch_sigterm()
            self._backend = backend_module(self.name).create(options, progress=self.loud)
            self._pipeline = Pipeline(self._backend, self.probe_settings, self.progress)
            self._variant = variant
        assert self._pipeline is not None
        return self._pipeline

    def start(self, variant: BackendVariant = DEFAULT_VARIANT) -> Pipeline:
        """:meth:`get`, ending the run with one message when the backend cannot start."""
        try:
            return self.get(variant)
        except BackendUnavailable as err:
            pytest.exit(unavailable_message(self.name, err), returncode=pytest.ExitCode.USAGE_ERROR)
        except HarnessError as err:
            pytest.exit(f"backend {self.name} could not start: {err}", returncode=pytest.ExitCode.TESTS_FAILED)

    def _catch_sigterm(self) -> None:
        """While a backend lives, SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so
        that what the backend created is removed."""
        if not self._sigterm_caught and hasattr(signal, "SIGTERM"):
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
            self._sigterm_caught = True

    def close(self) -> tuple[str, ...]:
        """Close the backend; what it has to tell the user afterwards (what it kept)."""
        backend, self._backend = self._backend, None
        self._pipeline = None
        try:
            if backend is not None:
                backend.close()
                return backend.closing_notes()
            return ()
        finally:
            if self._sigterm_caught:
                # None: a handler installed outside Python, which cannot be put back.
                signal.signal(signal.SIGTERM, self._previous_sigterm if self._previous_sigterm is not None else signal.SIG_DFL)
                self._sigterm_caught = False
