"""The operator's pure core: functions of (spec, observed world, now) with no I/O.

`spec` parses a Model's spec, `zones` finds the zones units may run in and
whether they are healthy, `placement` spreads units over them and plans the
surge-first moves, `manifests` builds the child objects, `status` the Model's
status and the Events' sentences, and `reconcile` chains them for a shell.
"""
