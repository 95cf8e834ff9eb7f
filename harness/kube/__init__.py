"""Kubernetes code shared by the ``kind`` and ``existing`` backends.

Modules here import the ``kubernetes`` client only inside functions or in modules
that the plugin does not import at start-up (``client``, ``cluster``), so that
``pytest --help`` stays fast.
"""
