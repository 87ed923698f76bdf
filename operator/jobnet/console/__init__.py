"""The operations console (``jobnet console`` / ``kubectl jobnet console``): the run list, the job
network monitor, the job monitor, the event list and the JobNet view, in the browser.

* :mod:`jobnet.console.views`, :mod:`jobnet.console.graphview` and :mod:`jobnet.console.i18n` are
  pure (JobRun bodies, run graphs and a clock in, rows, layouts and labels out), unit-tested;
* :mod:`jobnet.console.kubeapi` is the thin async Kubernetes client acting as the user (the
  kubeconfig's identity and impersonation, or the viewer's forwarded bearer token);
* :mod:`jobnet.console.server` is the aiohttp edge: server-rendered pages, Server-Sent Events
  fed by Kubernetes watches, and the actions (start, override, stop) as annotations.

See docs/console.md.
"""
