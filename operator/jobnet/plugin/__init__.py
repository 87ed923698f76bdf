"""The kubectl plugin commands: ``tree``, ``logs``, ``override``, ``stop`` and ``events``.

Installed as ``kubectl-jobnet`` (so ``kubectl jobnet tree RUN`` works) and also available as
``jobnet tree RUN``. :func:`add_plugin_commands` only declares the arguments: the Kubernetes
client and paramiko are imported when a plugin command runs, so ``jobnet lint`` stays light.
See docs/kubectl-plugin.md.
"""

from jobnet.plugin.commands import add_plugin_commands

__all__ = ["add_plugin_commands"]
