"""The Kubernetes edge of jobnet-operator: the kopf operator, its admission webhook and all of
its Kubernetes API I/O (``client``). Decisions live in the pure ``jobnet.core``."""
