"""``jobnet dev``: an embedded control plane for trying jobnet without a cluster.

The Kubernetes API emulator (:mod:`jobnet.devenv.emulator`), the real operator as a subprocess
(:mod:`jobnet.devenv.operator`), one local VM (:mod:`jobnet.devenv.vm`: a network namespace
with its own sshd) and the command itself (:mod:`jobnet.devenv.command`). The tests use the
same emulator and VMs. Needs the ``dev`` extra (kmock).
"""
