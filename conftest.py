"""Repository-wide test configuration.

The plugin itself is registered through its ``pytest11`` entry point (installed by
``pip install -e .``); ``pytester`` is enabled in pyproject.toml for the plugin's
own tests.
"""
