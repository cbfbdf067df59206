"""The local runtime (`vigil local up`): the second shell around the pure core.

It runs a Model's units as local `vigil serve` processes in simulated zones
and drives them with the same `controller.Controller` the kopf operator uses:
`control` holds each Model's world for it (`LocalModel`) and its timer and
autoscaler loops, `settings` the runtime's settings, `world` describes
the local processes as the Nodes, Pods and Deployments the core reads,
`deployments` plays the Deployment controller (scale, surge-first rollout),
`units` supervises the processes (start, health, restart, drain, kill),
`proxy` is the client endpoint, `api` the control API that `vigil local
apply/get/delete/zone` talk to, `store` keeps the Models as the API server
would (schema and CEL checks from the CRD), `documents` reads Model YAML and
`table` prints kubectl-style tables.
"""
